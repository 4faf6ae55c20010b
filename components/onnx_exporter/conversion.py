"""SavedModel signature -> ONNX, and the check tf2onnx does not do: every op must be a real ONNX op.

tf2onnx exits successfully even when it leaves TensorFlow ops it cannot map (DecodeJpeg,
ParseExampleV2, ...) in the graph; such a file fails only when loaded. `unsupported_ops` finds them.
"""
from typing import List

import onnx
import tensorflow as tf
import tf2onnx


class UnsupportedOps(RuntimeError):
    """The converted graph holds ops no ONNX runtime implements."""


def convert(saved_model_dir: str, signature_name: str, opset: int) -> onnx.ModelProto:
    """The signature as an ONNX model with the signature's input and output names."""
    loaded = tf.saved_model.load(saved_model_dir)  # referenced below: its variables must stay alive
    specs = loaded.signatures[signature_name].structured_input_signature[1]
    names = sorted(specs)
    input_signature = [tf.TensorSpec(specs[n].shape, specs[n].dtype, name=n) for n in names]
    function = tf.function(lambda *args: loaded.signatures[signature_name](**dict(zip(names, args))),
                           input_signature=input_signature)
    model, _ = tf2onnx.convert.from_function(function, input_signature=input_signature, opset=opset)
    return model


def unsupported_ops(model: onnx.ModelProto) -> List[str]:
    """Op types in the graph that are in no ONNX opset (sorted, once each)."""
    return sorted({node.op_type for node in model.graph.node
                   if not onnx.defs.has(node.op_type, node.domain or '')})


def check(model: onnx.ModelProto, signature_name: str) -> None:
    """Raises UnsupportedOps naming every op left unconverted, then runs onnx.checker."""
    left = unsupported_ops(model)
    if left:
        raise UnsupportedOps(
            f'tf2onnx left ops that are not ONNX in the graph of signature {signature_name!r}: {", ".join(left)}. '
            'Export a signature that takes decoded float pixels (decode and resize outside the graph).')
    onnx.checker.check_model(model)
