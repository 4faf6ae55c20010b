"""TF Serving's Predict on the protobuf wire, without TensorFlow: a PredictRequest of encoded
images encoded here, a PredictResponse's tensors decoded here, field for field as
tensorflow_serving/apis/predict.proto, model.proto and tensorflow/core/framework/tensor.proto
declare them. The server back-end sends them through gRPC's generic calls, so a camera box that
talks to a model server needs grpcio, not TensorFlow (tests check the bytes against the real
server).
"""
import struct
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

PREDICT_METHOD = '/tensorflow.serving.PredictionService/Predict'
DT_FLOAT, DT_DOUBLE, DT_INT32, DT_STRING, DT_INT64 = 1, 2, 3, 7, 9


class WireError(ValueError):
    """A response that is not the PredictResponse this back-end expects."""


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        bits, value = value & 0x7F, value >> 7
        out.append(bits | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, data: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _int(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def model_spec(name: str, signature_name: str, label: Optional[str] = None, version: Optional[int] = None) -> bytes:
    """ModelSpec: name = 1, version (Int64Value) = 2, signature_name = 3, version_label = 4."""
    spec = _field(1, name.encode())
    if version is not None:
        spec += _field(2, _int(1, version))
    spec += _field(3, signature_name.encode())
    if label is not None and version is None:
        spec += _field(4, label.encode())
    return spec


def predict_request(model: str, signature: str, input_name: str, images: Sequence[bytes],
                    label: Optional[str] = None, version: Optional[int] = None) -> bytes:
    """PredictRequest (model_spec = 1, inputs = 2) with one DT_STRING [N] tensor of encoded images."""
    shape = _field(2, _field(2, _int(1, len(images))))  # tensor_shape = 2 { dim = 2 { size = 1 } }
    tensor = _int(1, DT_STRING) + shape + b''.join(_field(8, image) for image in images)  # string_val = 8
    entry = _field(1, input_name.encode()) + _field(2, tensor)
    return _field(1, model_spec(model, signature, label, version)) + _field(2, entry)


def _read_varint(data: bytes, at: int) -> Tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data) or shift > 63:
            raise WireError('truncated varint')
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7


def fields(data: bytes) -> List[Tuple[int, int, object]]:
    """(field number, wire type, value) of each field of a message: ints for varints, bytes for
    length-delimited fields, raw bytes for fixed32/fixed64."""
    out, at = [], 0
    while at < len(data):
        key, at = _read_varint(data, at)
        number, kind = key >> 3, key & 7
        if kind == 0:
            value, at = _read_varint(data, at)
        elif kind == 2:
            size, at = _read_varint(data, at)
            if at + size > len(data):
                raise WireError('truncated field')
            value, at = data[at:at + size], at + size
        elif kind in (1, 5):
            size = 8 if kind == 1 else 4
            value, at = data[at:at + size], at + size
        else:
            raise WireError(f'unsupported wire type {kind}')
        out.append((number, kind, value))
    return out


def tensor_value(data: bytes) -> np.ndarray:
    """A TensorProto of floats, doubles, ints or strings as an array of its shape."""
    dtype, dims, content = DT_FLOAT, [], None
    values: List = []
    for number, kind, value in fields(data):
        if number == 1 and kind == 0:
            dtype = value
        elif number == 2:
            dims = [dict((n, v) for n, _, v in fields(dim)).get(1, 0) for n, _, dim in fields(value) if n == 2]
        elif number == 4:
            content = value
        elif number in (5, 6) and kind == 2:  # packed float_val / double_val
            values.extend(np.frombuffer(value, '<f4' if number == 5 else '<f8').tolist())
        elif number in (5, 6):
            values.append(struct.unpack('<f' if number == 5 else '<d', value)[0])
        elif number in (7, 10) and kind == 2:  # packed int_val / int64_val
            at = 0
            while at < len(value):
                item, at = _read_varint(value, at)
                values.append(item - (1 << 64) if item >= 1 << 63 else item)
        elif number in (7, 10):
            values.append(value)
        elif number == 8:
            values.append(value)
    numpy_type = {DT_FLOAT: '<f4', DT_DOUBLE: '<f8', DT_INT32: '<i4', DT_INT64: '<i8'}.get(dtype)
    if dtype == DT_STRING:
        array = np.array(values, dtype=object)
    elif numpy_type is None:
        raise WireError(f'unsupported dtype {dtype}')
    elif content is not None:
        array = np.frombuffer(content, numpy_type)
    else:
        array = np.array(values, dtype=numpy_type)
    count = int(np.prod(dims)) if dims else 1
    if array.size == 1 and count > 1:  # TF's shorthand: one value fills the tensor
        array = np.repeat(array, count)
    if array.size != count:
        raise WireError(f'a tensor of shape {dims} holds {array.size} values')
    return array.reshape(dims)


def predict_response(data: bytes) -> Tuple[Dict[str, np.ndarray], Optional[int]]:
    """A PredictResponse's outputs (outputs = 1) and the version that answered (model_spec = 2)."""
    outputs, version = {}, None
    for number, _, value in fields(data):
        if number == 1:
            entry = {n: v for n, _, v in fields(value)}
            outputs[entry.get(1, b'').decode()] = tensor_value(entry.get(2, b''))
        elif number == 2:
            for n, _, v in fields(value):
                if n == 2:
                    version = dict((k, x) for k, _, x in fields(v)).get(1, 0)
    return outputs, version
