"""A SavedModel version as a servable: signature metadata and Predict/Classify/Regress calls."""
import os
import re
from typing import Dict, Iterable, Optional, Sequence

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from tensorflow_serving.apis import get_model_metadata_pb2

from petpark.serving import errors
from petpark.serving.layout import SAVED_MODEL_FILE
from petpark.serving.model_store import Servable

DEFAULT_SIGNATURE = 'serving_default'
# TensorFlow's error codes are gRPC's canonical codes.
_STATUS_CODES = {code.value[0]: code for code in grpc.StatusCode}
CLASSIFY_METHOD = 'tensorflow/serving/classify'
REGRESS_METHOD = 'tensorflow/serving/regress'


def read_signature_defs(path: str) -> Dict[str, meta_graph_pb2.SignatureDef]:
    """The 'serve' meta graph's SignatureDefs, as stored in saved_model.pb."""
    saved_model = saved_model_pb2.SavedModel()
    with open(os.path.join(path, SAVED_MODEL_FILE), 'rb') as f:
        saved_model.ParseFromString(f.read())
    for meta_graph in saved_model.meta_graphs:
        if 'serve' in meta_graph.meta_info_def.tags:
            return dict(meta_graph.signature_def)
    raise ValueError(f'{path}: no meta graph tagged "serve"')


class TfServable(Servable):
    """One loaded SavedModel version."""

    def __init__(self, name: str, path: str, version: int):
        super().__init__()
        self.name, self.path, self.version = name, path, version
        self.signature_defs = read_signature_defs(path)
        self._model = tf.saved_model.load(path, tags=['serve'])
        self._functions = dict(self._model.signatures)

    def signature(self, name: Optional[str]) -> meta_graph_pb2.SignatureDef:
        name = name or DEFAULT_SIGNATURE
        if name not in self.signature_defs or name not in self._functions:
            raise errors.failed_precondition(f'Serving signature name: "{name}" not found in signature def')
        return self.signature_defs[name]

    def signature_def_map(self) -> get_model_metadata_pb2.SignatureDefMap:
        """All signatures, as GetModelMetadata reports them."""
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for key, signature in self.signature_defs.items():
            signature_map.signature_def[key].CopyFrom(signature)
        return signature_map

    def run(self, signature_name: Optional[str], inputs: Dict[str, np.ndarray],
            output_filter: Iterable[str] = ()) -> Dict[str, np.ndarray]:
        """Calls a signature with numpy inputs keyed by alias; returns numpy outputs by alias."""
        name = signature_name or DEFAULT_SIGNATURE
        signature = self.signature(name)
        expected = set(signature.inputs)
        if set(inputs) != expected:
            missing, extra = sorted(expected - set(inputs)), sorted(set(inputs) - expected)
            raise errors.invalid_argument(
                f'input size does not match signature: {len(inputs)}!={len(expected)} len({{{", ".join(sorted(inputs))}}})'
                f' != len({{{", ".join(sorted(expected))}}}). Sent extra: {extra}. Missing but required: {missing}.')
        unknown = [alias for alias in output_filter if alias not in signature.outputs]
        if unknown:
            raise errors.invalid_argument(f'output tensor alias not found in signature: {unknown[0]} Outputs '
                                          f'expected to be in the set {{{",".join(sorted(signature.outputs))}}}.')
        tensors = {}
        for alias, value in inputs.items():
            check_shape(alias, np.shape(value), signature.inputs[alias])
            dtype = tf.dtypes.as_dtype(signature.inputs[alias].dtype)
            try:
                tensors[alias] = tf.constant(value, dtype=dtype)
            except (TypeError, ValueError, OverflowError) as e:
                raise errors.invalid_argument(f'Input {alias}: {e}') from None
        try:
            outputs = self._functions[name](**tensors)
        except tf.errors.OpError as e:
            raise errors.ServingError(_STATUS_CODES.get(e.error_code, grpc.StatusCode.INTERNAL), reason(e)) from None
        except (ValueError, TypeError) as e:
            raise errors.invalid_argument(str(e).strip().splitlines()[0]) from None
        wanted = list(output_filter) or list(outputs)
        return {alias: outputs[alias].numpy() for alias in wanted}

    def examples_signature(self, name: Optional[str], method: str) -> str:
        """Checks a Classify/Regress request's signature; returns its single input alias."""
        signature = self.signature(name)
        if signature.method_name != method:
            raise errors.invalid_argument(
                f'Expected {method.rsplit("/", 1)[-1]} signature method_name to be {method}. '
                f'Was: {signature.method_name}')
        if len(signature.inputs) != 1:
            raise errors.invalid_argument(f'Expected one input Tensor, found {len(signature.inputs)}')
        return next(iter(signature.inputs))


def check_shape(alias: str, shape: Sequence[int], tensor_info: meta_graph_pb2.TensorInfo) -> None:
    """Refuses an input whose rank or known dimensions differ from the signature's."""
    if tensor_info.tensor_shape.unknown_rank:
        return
    expected = [d.size for d in tensor_info.tensor_shape.dim]
    if len(shape) != len(expected) or any(e >= 0 and e != d for e, d in zip(expected, shape)):
        raise errors.invalid_argument(f'Input {alias} has shape {list(shape)}; the signature expects '
                                      f'{expected} (-1: any size)')


def reason(error: tf.errors.OpError) -> str:
    """TF's own account of a failed call, without the "Graph execution error:" wrapper, the
    "Detected at node" stack note and node names: e.g. "Unknown image file format. ..."."""
    kept, in_stack_note = [], False
    for line in error.message.splitlines():
        if line.startswith('Detected at node'):
            in_stack_note = True
            continue
        if in_stack_note and (line.startswith((' ', '\t', '<stack traces')) or not line.strip()):
            continue
        in_stack_note = False
        text = re.sub(r'\{\{[^}]*\}\}\s*|\s*\[Op:[^\]]*\]$', '', line.strip())
        if text and text != 'Graph execution error:' and not text.startswith('[['):
            kept.append(text)
    return ' '.join(kept) or error.message.strip()


def classification_results(outputs: Dict[str, np.ndarray]) -> list:
    """[[[label, score], ...] per example] from a classify signature's `classes`/`scores`."""
    scores = outputs.get('scores')
    classes = outputs.get('classes')
    rows = len(scores) if scores is not None else len(classes)
    results = []
    for row in range(rows):
        width = scores.shape[1] if scores is not None else classes.shape[1]
        labels = [c.decode('utf-8', 'replace') if isinstance(c, bytes) else str(c)
                  for c in (classes[row] if classes is not None else [''] * width)]
        values = scores[row].tolist() if scores is not None else [0.0] * width
        results.append([[label, value] for label, value in zip(labels, values)])
    return results


def load(name: str, path: str, version: int) -> TfServable:
    return TfServable(name, path, version)
