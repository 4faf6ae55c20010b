"""TF Serving's REST JSON <-> tensors (util/json_tensor.cc): row ("instances") and columnar
("inputs") requests, {"b64": ...} for DT_STRING, `_bytes` outputs returned as b64."""
import base64
import binascii
import json
import math
import re
from typing import Any, Dict, List, Tuple

import numpy as np
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow.python.framework import dtypes as tf_dtypes

from petpark.serving import errors
from petpark.serving.limits import Limits

_FLOATS = {types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE, types_pb2.DT_HALF, types_pb2.DT_BFLOAT16}
_INTS = {types_pb2.DT_INT8, types_pb2.DT_INT16, types_pb2.DT_INT32, types_pb2.DT_INT64, types_pb2.DT_UINT8,
         types_pb2.DT_UINT16, types_pb2.DT_UINT32, types_pb2.DT_UINT64}
_TYPE_NAMES = {types_pb2.DT_FLOAT: 'float', types_pb2.DT_DOUBLE: 'double', types_pb2.DT_INT32: 'int32',
               types_pb2.DT_INT64: 'int64', types_pb2.DT_STRING: 'string', types_pb2.DT_BOOL: 'bool'}


# Where a number may not fit a double: an exponent of 3 digits or more, or 309 digits in a row.
_MAYBE_TOO_BIG = re.compile(rb'[eE]\+?[0-9]{3}|[0-9]{309}')


def _number_too_big(text: str) -> errors.ServingError:
    shown = text if len(text) <= 40 else f'{text[:20]}...({len(text)} characters)'
    return errors.invalid_argument(f'JSON Parse error: Number too big to be stored in double: {shown}')


def _parse_float(text: str) -> float:
    """A JSON number with a fraction or exponent; beyond double's range (1e999) it is an error, as in
    TF Serving (NaN and Infinity, written as such, stay accepted)."""
    value = float(text)
    if math.isinf(value):
        raise _number_too_big(text)
    return value


def _parse_int(text: str) -> int:
    """A JSON integer; one longer than Python converts (4,300 digits) is an error, not a crash."""
    try:
        return int(text)
    except ValueError:
        raise _number_too_big(text) from None


def parse_body(body: bytes, limits: Limits) -> Dict[str, Any]:
    """The request's JSON object, or TF Serving's parse errors."""
    if not body.strip():
        raise errors.invalid_argument('JSON Parse error: The document is empty')
    try:
        if _MAYBE_TOO_BIG.search(body):  # rare: check every number (a third slower)
            document = json.loads(body, parse_float=_parse_float, parse_int=_parse_int)
        else:
            document = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise errors.invalid_argument(f'JSON Parse error: Invalid value. at offset: {getattr(e, "pos", 0)}') from None
    except RecursionError:
        raise limits.exceeded('max_json_depth', 'deeper than Python can parse', 'The nesting of the JSON body') from None
    if not isinstance(document, dict):
        raise errors.invalid_argument('JSON Value: not a JSON object. Request body must be a JSON object')
    return document


def _leaf(value: Any, dtype: int, alias: str) -> Any:
    """One scalar checked against the input's dtype and its range."""
    type_name = _TYPE_NAMES.get(dtype, types_pb2.DataType.Name(dtype))

    def wrong(kind: str) -> errors.ServingError:
        return errors.invalid_argument(f'JSON Value: {json.dumps(value)} Type: {kind} is not of expected type: {type_name}')

    if isinstance(value, dict):
        if set(value) != {'b64'} or not isinstance(value['b64'], str):
            raise wrong('Object')
        if dtype != types_pb2.DT_STRING:
            raise errors.invalid_argument(f'JSON Value: {json.dumps(value)} Type: Object is not of expected type: '
                                          f'{type_name}. "b64" is only for DT_STRING inputs ({alias})')
        try:
            return base64.b64decode(value['b64'], validate=True)
        except (binascii.Error, ValueError):
            raise errors.invalid_argument(f'Unable to base64 decode the value of input {alias}') from None
    if dtype == types_pb2.DT_STRING:
        if not isinstance(value, str):
            raise wrong('Number' if isinstance(value, (int, float)) else type(value).__name__)
        return value.encode('utf-8')
    if dtype == types_pb2.DT_BOOL:
        if not isinstance(value, bool):
            raise wrong('String' if isinstance(value, str) else 'Number')
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise wrong('String' if isinstance(value, str) else 'Bool' if isinstance(value, bool) else type(value).__name__)
    if dtype in _INTS:
        if isinstance(value, float) and not value.is_integer():
            raise wrong('Double')
        bounds = np.iinfo(tf_dtypes.as_dtype(dtype).as_numpy_dtype)
        if not bounds.min <= value <= bounds.max:
            raise errors.invalid_argument(f'JSON Value: {_short(value)} is out of range for {type_name} in input {alias}')
        return int(value)
    try:
        return float(value)
    except OverflowError:
        raise errors.invalid_argument(f'JSON Value: {_short(value)} is out of range for {type_name} in input {alias}') from None


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else f'{text[:20]}...({len(text)} characters)'


def _to_array(value: Any, tensor_info: meta_graph_pb2.TensorInfo, alias: str, limits: Limits) -> np.ndarray:
    """Nested JSON lists -> ndarray, checking depth, leaves and rectangularity."""
    dtype = tensor_info.dtype

    def convert(node: Any, depth: int) -> Tuple[Any, Tuple[int, ...]]:
        if depth > limits.max_json_depth:
            raise limits.exceeded('max_json_depth', f'over {limits.max_json_depth}', f'The nesting of input {alias}')
        if isinstance(node, list):
            converted = [convert(child, depth + 1) for child in node]
            shapes = {shape for _, shape in converted}
            if len(shapes) > 1:
                raise errors.invalid_argument(
                    f'Expecting tensor size: {len(converted)} elements of equal shape for input {alias}, '
                    f'got shapes {sorted(shapes)}: ragged values are not allowed')
            inner = shapes.pop() if shapes else ()
            return [c for c, _ in converted], (len(node),) + inner
        return _leaf(node, dtype, alias), ()

    data, _ = convert(value, 0)
    if dtype == types_pb2.DT_STRING:
        return np.array(data, dtype=object)
    return np.array(data)


def _named_inputs(signature: meta_graph_pb2.SignatureDef, value: Any, where: str) -> Dict[str, Any]:
    """{alias: value} for one instance or the columnar body (a bare value needs one input)."""
    aliases = list(signature.inputs)
    if isinstance(value, dict) and not (set(value) == {'b64'} and len(aliases) == 1):
        missing = [a for a in aliases if a not in value]
        if missing:
            raise errors.invalid_argument(f"Missing named input '{missing[0]}' in {where}")
        unknown = [k for k in value if k not in signature.inputs]
        if unknown:
            raise errors.invalid_argument(f"Unknown input '{unknown[0]}' in {where}; signature expects {aliases}")
        return value
    if len(aliases) != 1:
        raise errors.invalid_argument(
            f'{where}: the signature has {len(aliases)} inputs {aliases}; name each input in a JSON object')
    return {aliases[0]: value}


def request_to_inputs(document: Dict[str, Any], signature: meta_graph_pb2.SignatureDef,
                      limits: Limits) -> Tuple[Dict[str, np.ndarray], bool]:
    """Predict body -> ({alias: ndarray}, is_row_format)."""
    has_instances, has_inputs = 'instances' in document, 'inputs' in document
    if has_instances and has_inputs:
        raise errors.invalid_argument("Not formatted correctly expecting only one of 'inputs' or 'instances' keys exist")
    if not (has_instances or has_inputs):
        raise errors.invalid_argument("Missing 'inputs' or 'instances' key")
    if has_inputs:
        named = _named_inputs(signature, document['inputs'], "'inputs'")
        for alias, value in named.items():
            if isinstance(value, list):
                limits.check_rows(len(value), f'The batch size of input {alias}')
        return {a: _to_array(v, signature.inputs[a], a, limits) for a, v in named.items()}, False
    instances = document['instances']
    if not isinstance(instances, list):
        raise errors.invalid_argument("Expecting 'instances' to be an list/array")
    if not instances:
        raise errors.invalid_argument("No values in 'instances' array")
    limits.check_rows(len(instances), "The number of 'instances'")
    rows = [_named_inputs(signature, instance, f"'instances' element {i}") for i, instance in enumerate(instances)]
    return {a: _to_array([row[a] for row in rows], signature.inputs[a], a, limits) for a in signature.inputs}, True


def _jsonable(alias: str, array: np.ndarray) -> Any:
    if array.dtype == object or array.dtype.kind in 'SU':
        def encode(item: Any) -> Any:
            data = item if isinstance(item, bytes) else str(item).encode('utf-8')
            if alias.endswith('_bytes'):
                return {'b64': base64.b64encode(data).decode('ascii')}
            return data.decode('utf-8', errors='replace')
        return np.vectorize(encode, otypes=[object])(array).tolist() if array.size else array.tolist()
    return array.tolist()


def outputs_to_response(outputs: Dict[str, np.ndarray], row_format: bool) -> Dict[str, Any]:
    """{"predictions": [...]} (row) or {"outputs": ...} (columnar)."""
    converted = {alias: _jsonable(alias, array) for alias, array in outputs.items()}
    if not row_format:
        return {'outputs': next(iter(converted.values())) if len(converted) == 1 else converted}
    if len(converted) == 1:
        return {'predictions': next(iter(converted.values()))}
    batch = {len(v) for v in converted.values() if isinstance(v, list)}
    if len(batch) != 1:
        raise errors.invalid_argument('Outputs do not share a batch size; use the columnar ("inputs") format')
    size = batch.pop()
    return {'predictions': [{alias: values[i] for alias, values in converted.items()} for i in range(size)]}


def examples_from_json(document: Dict[str, Any], limits: Limits) -> List[bytes]:
    """Classify/Regress body ({"examples": [...], "context"?: {...}}) -> serialized tf.Examples."""
    import tensorflow as tf  # local: only Classify/Regress need the proto

    examples = document.get('examples')
    if not isinstance(examples, list) or not examples:
        raise errors.invalid_argument("Missing or empty 'examples' array in the request")
    limits.check_rows(len(examples), "The number of 'examples'")
    context = document.get('context') or {}
    if not isinstance(context, dict):
        raise errors.invalid_argument("'context' must be a JSON object")

    def feature(name: str, value: Any) -> tf.train.Feature:
        values = value if isinstance(value, list) else [value]
        if all(isinstance(v, bool) or isinstance(v, int) for v in values):
            return tf.train.Feature(int64_list=tf.train.Int64List(
                value=[int(v) if isinstance(v, bool) else _leaf(v, types_pb2.DT_INT64, name) for v in values]))
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            return tf.train.Feature(float_list=tf.train.FloatList(
                value=[_leaf(v, types_pb2.DT_FLOAT, name) for v in values]))
        if all(isinstance(v, str) or isinstance(v, dict) for v in values):
            return tf.train.Feature(bytes_list=tf.train.BytesList(
                value=[_leaf(v, types_pb2.DT_STRING, name) for v in values]))
        raise errors.invalid_argument(f'Feature {name}: values must all be numbers, or all strings/b64')

    serialized = []
    for index, example in enumerate(examples):
        if not isinstance(example, dict):
            raise errors.invalid_argument(f"'examples' element {index} must be a JSON object")
        merged = dict(context, **example)
        serialized.append(tf.train.Example(features=tf.train.Features(
            feature={name: feature(name, value) for name, value in merged.items()})).SerializeToString())
    return serialized
