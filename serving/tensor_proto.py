"""TensorProto <-> numpy for the gRPC API: requests checked before they are built, responses in
TF Serving's typed fields."""
import math
from typing import Mapping

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2

from petpark.serving import errors
from petpark.serving.limits import Limits

# TensorProto's typed repeated field for each dtype (tensorflow/core/framework/tensor.proto).
_TYPED_FIELDS = {
    tf.float32: 'float_val', tf.float64: 'double_val', tf.int32: 'int_val', tf.int16: 'int_val',
    tf.int8: 'int_val', tf.uint8: 'int_val', tf.uint16: 'int_val', tf.int64: 'int64_val',
    tf.uint32: 'uint32_val', tf.uint64: 'uint64_val', tf.bool: 'bool_val', tf.string: 'string_val',
    tf.float16: 'half_val', tf.complex64: 'scomplex_val', tf.complex128: 'dcomplex_val',
}


def as_proto_field(value: np.ndarray) -> tensor_pb2.TensorProto:
    """A tensor the way TF Serving answers by default (Tensor::AsProtoField): its values in the
    typed repeated field (`float_val`, `string_val`, ...), not in `tensor_content`, so clients
    that read `outputs[...].float_val` get the values."""
    array = np.asarray(value)
    dtype = tf.string if array.dtype == object or array.dtype.kind in 'SU' else tf.as_dtype(array.dtype)
    proto = tensor_pb2.TensorProto(dtype=dtype.as_datatype_enum,
                                   tensor_shape=tf.TensorShape(array.shape).as_proto())
    flat = array.ravel()
    if dtype == tf.string:
        proto.string_val.extend(v if isinstance(v, bytes) else str(v).encode('utf-8') for v in flat)
    elif dtype == tf.float16:
        proto.half_val.extend(flat.view(np.uint16).tolist())
    elif dtype in (tf.complex64, tf.complex128):
        getattr(proto, _TYPED_FIELDS[dtype]).extend(np.stack([flat.real, flat.imag], axis=-1).ravel().tolist())
    elif dtype in _TYPED_FIELDS:
        getattr(proto, _TYPED_FIELDS[dtype]).extend(flat.tolist())
    else:  # no typed field (e.g. bfloat16): raw bytes, as TF does for those
        proto.tensor_content = array.tobytes()
    return proto


def from_proto(proto: tensor_pb2.TensorProto, alias: str, limits: Limits) -> np.ndarray:
    """The request tensor as an array, after checking its dtype, shape and value count against
    what it declares and against `limits` (so a one-value tensor cannot broadcast to gigabytes)."""
    if proto.dtype not in types_pb2.DataType.values():
        raise errors.invalid_argument(f'Input {alias}: unknown dtype {proto.dtype}')
    if proto.dtype in (types_pb2.DT_INVALID, types_pb2.DT_VARIANT, types_pb2.DT_RESOURCE) or \
            types_pb2.DataType.Name(proto.dtype).endswith('_REF'):
        raise errors.invalid_argument(f'Input {alias}: dtype {types_pb2.DataType.Name(proto.dtype)} is not '
                                      'a dtype a request can carry')
    try:
        dtype = tf.as_dtype(proto.dtype)
    except TypeError:
        raise errors.invalid_argument(f'Input {alias}: unknown dtype {proto.dtype}') from None
    if proto.tensor_shape.unknown_rank:
        raise errors.invalid_argument(f'Input {alias}: the tensor has an unknown rank')
    shape = [d.size for d in proto.tensor_shape.dim]
    limits.check_shape(shape, alias)
    elements = math.prod(shape)
    if proto.tensor_content:
        if dtype == tf.string:
            raise errors.invalid_argument(f'Input {alias}: DT_STRING values cannot be in tensor_content')
        if len(proto.tensor_content) != elements * dtype.size:
            raise errors.invalid_argument(
                f'Input {alias}: tensor_content has {len(proto.tensor_content)} bytes; shape {shape} of '
                f'{dtype.name} needs {elements * dtype.size}')
    elif dtype in _TYPED_FIELDS:
        per_element = 2 if dtype in (tf.complex64, tf.complex128) else 1
        values = len(getattr(proto, _TYPED_FIELDS[dtype])) // per_element
        if values > elements or (values == 0 and elements > 0):
            raise errors.invalid_argument(f'Input {alias}: {values} values for shape {shape} ({elements} elements)')
    try:
        return tf.make_ndarray(proto)
    except (ValueError, TypeError) as e:
        raise errors.invalid_argument(f'Input {alias}: {e}') from None


def check_dtypes(tensors: Mapping[str, tensor_pb2.TensorProto], signature: meta_graph_pb2.SignatureDef) -> None:
    """Refuses a tensor whose dtype is not its input's (no silent cast of double to float), as TF Serving does."""
    for alias, tensor in tensors.items():
        if alias in signature.inputs and tensor.dtype != signature.inputs[alias].dtype:
            raise errors.invalid_argument(f'Input {alias}: expects {_dtype_name(signature.inputs[alias].dtype)} '
                                          f'but {_dtype_name(tensor.dtype)} is provided')


def _dtype_name(dtype: int) -> str:
    """TensorFlow's name of a DataType: DT_FLOAT -> float, DT_BFLOAT16 -> bfloat16."""
    return types_pb2.DataType.Name(dtype)[len('DT_'):].lower()
