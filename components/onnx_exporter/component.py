"""OnnxExporter: every blessed model also ships as a proven ONNX file for the edge boxes."""
import json
from typing import Any, Dict, Optional, Sequence

from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import channel, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from petpark.components.common.artifacts import OnnxModel
from petpark.components.onnx_exporter import executor


class OnnxExporterSpec(ComponentSpec):
    PARAMETERS = {
        'model_name': ExecutionParameter(type=str),
        'edge_base_directory': ExecutionParameter(type=str),
        'signature_name': ExecutionParameter(type=str),
        'opset': ExecutionParameter(type=int),
        'class_names': ExecutionParameter(type=str),
        'decision_threshold': ExecutionParameter(type=float),
        'raw_feature_keys': ExecutionParameter(type=str),
        'pixels_key': ExecutionParameter(type=str),
        'pixel_contract': ExecutionParameter(type=str),
        'label_key': ExecutionParameter(type=str),
        'parity_examples': ExecutionParameter(type=int),
        'parity_tolerance': ExecutionParameter(type=float),
        'accuracy_examples': ExecutionParameter(type=int),
        'quantize_int8': ExecutionParameter(type=int),
        'calibration_examples': ExecutionParameter(type=int),
        'max_int8_accuracy_drop': ExecutionParameter(type=float),
    }
    INPUTS = {
        executor.MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
        executor.BLESSING_KEY: ChannelParameter(type=standard_artifacts.ModelBlessing),
        executor.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
        executor.TRANSFORM_GRAPH_KEY: ChannelParameter(type=standard_artifacts.TransformGraph),
        executor.PUSHED_MODEL_KEY: ChannelParameter(type=standard_artifacts.PushedModel, optional=True),
        executor.EVALUATION_KEY: ChannelParameter(type=standard_artifacts.ModelEvaluation, optional=True),
    }
    OUTPUTS = {executor.ONNX_MODEL_KEY: ChannelParameter(type=OnnxModel)}


class OnnxExporter(base_component.BaseComponent):
    """Converts the model's float-pixel signature with tf2onnx, refuses ops ONNX does not have,
    proves parity with the SavedModel on eval examples, quantizes to INT8 when that costs at most
    `max_int8_accuracy_drop` accuracy, and publishes `<edge_base_directory>/<version>/` atomically,
    with the version number the Pusher gave the SavedModel. An unblessed model exports nothing."""
    SPEC_CLASS = OnnxExporterSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, model: channel.BaseChannel, model_blessing: channel.BaseChannel,
                 examples: channel.BaseChannel, transform_graph: channel.BaseChannel, *, model_name: str,
                 edge_base_directory: str, class_names: Sequence[str], raw_feature_keys: Sequence[str],
                 pixels_key: str, label_key: str, pixel_contract: Dict[str, Any],
                 pushed_model: Optional[channel.BaseChannel] = None,
                 evaluation: Optional[channel.BaseChannel] = None, signature_name: str = 'serving_pixels',
                 opset: int = 17, decision_threshold: float = 0.5, parity_examples: int = 64,
                 parity_tolerance: float = 1e-4, accuracy_examples: int = 2000, quantize_int8: bool = True,
                 calibration_examples: int = 200, max_int8_accuracy_drop: float = 0.01):
        if not 7 <= opset <= 21:
            raise ValueError(f'opset must be between 7 and 21, got {opset}')
        if min(parity_examples, accuracy_examples, calibration_examples) < 1:
            raise ValueError('parity_examples, accuracy_examples and calibration_examples must be at least 1')
        super().__init__(spec=OnnxExporterSpec(
            model=model, model_blessing=model_blessing, examples=examples, transform_graph=transform_graph,
            pushed_model=pushed_model, evaluation=evaluation, model_name=model_name,
            edge_base_directory=edge_base_directory, signature_name=signature_name, opset=opset,
            class_names=json.dumps(list(class_names)), decision_threshold=decision_threshold,
            raw_feature_keys=json.dumps(list(raw_feature_keys)), pixels_key=pixels_key, label_key=label_key,
            pixel_contract=json.dumps(pixel_contract, sort_keys=True), parity_examples=parity_examples,
            parity_tolerance=parity_tolerance,
            accuracy_examples=accuracy_examples, quantize_int8=int(quantize_int8),
            calibration_examples=calibration_examples, max_int8_accuracy_drop=max_int8_accuracy_drop,
            onnx_model=channel.Channel(type=OnnxModel)))
