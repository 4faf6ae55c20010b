"""OnnxExporter executor: convert, prove, optionally quantize, and publish for the edge boxes."""
import json
import os
import time
from typing import Any, Dict, List, Optional

import numpy as np
import onnx
import tensorflow as tf
from absl import logging
from tfx.dsl.components.base import base_executor
from tfx.dsl.io import fileio
from tfx.types import artifact, artifact_utils
from tfx.utils import io_utils, path_utils

from petpark.components.onnx_exporter import conversion, examples, proof
from petpark.components.serving_pusher import executor as serving_pusher

MODEL_KEY, BLESSING_KEY, EXAMPLES_KEY = 'model', 'model_blessing', 'examples'
TRANSFORM_GRAPH_KEY, PUSHED_MODEL_KEY, EVALUATION_KEY = 'transform_graph', 'pushed_model', 'evaluation'
ONNX_MODEL_KEY = 'onnx_model'
FP32_FILE, INT8_FILE, METADATA_FILE = 'model.onnx', 'model.int8.onnx', 'metadata.json'
FORMAT = 'petpark-edge/1'


class ParityError(RuntimeError):
    """The ONNX file does not compute what the SavedModel computes."""


def _single(input_dict: Dict[str, List[artifact.Artifact]], key: str) -> Optional[artifact.Artifact]:
    found = input_dict.get(key) or []
    return found[0] if found else None


def overall_metrics(evaluation_uri: str) -> Dict[str, float]:
    """The Evaluator's overall-slice metrics (for the positive class where binarized)."""
    import tensorflow_model_analysis as tfma
    for result in tfma.load_metrics(evaluation_uri):
        if tfma.slicer.deserialize_slice_key(result.slice_key):
            continue
        return {item.key.name: item.value.double_value.value for item in result.metric_keys_and_values
                if item.value.HasField('double_value') and not item.key.is_diff}
    return {}


def _transformed(input_dict, exec_properties, split: str, limit: int):
    return examples.transformed(
        artifact_utils.get_single_instance(input_dict[EXAMPLES_KEY]), split,
        artifact_utils.get_single_uri(input_dict[TRANSFORM_GRAPH_KEY]),
        json.loads(exec_properties['raw_feature_keys']), exec_properties['pixels_key'],
        exec_properties['label_key'], limit, float(exec_properties.get('pixels_scale', 1.0)))


class Executor(base_executor.BaseExecutor):
    """See component.OnnxExporter."""

    def Do(self, input_dict: Dict[str, List[artifact.Artifact]], output_dict: Dict[str, List[artifact.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        exported = artifact_utils.get_single_instance(output_dict[ONNX_MODEL_KEY])
        blessing = _single(input_dict, BLESSING_KEY)
        if not blessing.get_int_custom_property('blessed'):
            exported.set_int_custom_property('exported', 0)
            exported.set_string_custom_property('reason', 'the model was not blessed')
            logging.info('OnnxExporter: the model was not blessed; nothing exported.')
            return
        model = artifact_utils.get_single_instance(input_dict[MODEL_KEY])
        saved_model = path_utils.serving_model_path(model.uri)
        signature_name, tolerance = exec_properties['signature_name'], float(exec_properties['parity_tolerance'])
        pushed = _single(input_dict, PUSHED_MODEL_KEY)
        version = (pushed.get_string_custom_property('pushed_version') if pushed is not None else '') or \
            str(int(time.time()))

        onnx_model = conversion.convert(saved_model, signature_name, int(exec_properties['opset']))
        conversion.check(onnx_model, signature_name)
        fp32_path = os.path.join(exported.uri, FP32_FILE)
        fileio.makedirs(exported.uri)
        onnx.save(onnx_model, fp32_path)
        fp32 = proof.session(fp32_path)

        pixels, labels = _transformed(input_dict, exec_properties, 'eval', int(exec_properties['accuracy_examples']))
        compared = pixels[:int(exec_properties['parity_examples'])]
        loaded = tf.saved_model.load(saved_model)
        input_name = fp32.get_inputs()[0].name
        reference = loaded.signatures[signature_name](**{input_name: tf.constant(compared)})[
            fp32.get_outputs()[0].name].numpy()
        parity = proof.parity(proof.run(fp32, compared), reference)
        if not parity.holds(tolerance):
            raise ParityError(f'ONNX and SavedModel disagree on {len(compared)} eval examples: largest probability '
                              f'difference {parity.max_abs_difference:.3g} (allowed {tolerance:g}), same class on '
                              f'{parity.same_class} of {parity.examples}')
        fp32_accuracy = proof.accuracy(proof.run(fp32, pixels), labels)
        int8 = self._int8(input_dict, exec_properties, exported.uri, input_name, pixels, labels, fp32_accuracy)

        evaluation = _single(input_dict, EVALUATION_KEY)
        metadata = {
            'format': FORMAT,
            'model_name': exec_properties['model_name'],
            'version': version,
            'files': {'fp32': FP32_FILE, 'int8': INT8_FILE if int8['shipped'] else None},
            'opset': int(exec_properties['opset']),
            'input': {
                'name': input_name, 'dtype': 'float32', 'layout': 'NHWC',
                'shape': [-1, *compared.shape[1:]], 'colour_order': 'RGB',
                'resize': {'height': int(compared.shape[1]), 'width': int(compared.shape[2]),
                           'method': 'bilinear', 'antialias': True, 'keep_aspect_ratio': False,
                           'as': 'tf.image.resize(float pixels, [height, width], antialias=True)'},
                'scale': {'divide_by': 255.0, 'clip': [0.0, 1.0]},
            },
            'output': {'name': fp32.get_outputs()[0].name, 'class_names': json.loads(exec_properties['class_names']),
                       'positive_class': json.loads(exec_properties['class_names'])[-1],
                       'decision_threshold': float(exec_properties['decision_threshold'])},
            'source': {'saved_model_version': version, 'signature': signature_name, 'model_uri': model.uri},
            'parity': {'examples': parity.examples, 'max_abs_difference': parity.max_abs_difference,
                       'same_class': parity.same_class, 'tolerance': tolerance},
            'accuracy': {'examples': int(len(labels)), 'fp32': fp32_accuracy, 'int8': int8['accuracy']},
            'quantization': int8,
            'evaluation': overall_metrics(evaluation.uri) if evaluation is not None else {},
        }
        io_utils.write_string_file(os.path.join(exported.uri, METADATA_FILE), json.dumps(metadata, indent=1))
        destination = os.path.join(exec_properties['edge_base_directory'], version)
        self._publish(exported.uri, exec_properties['edge_base_directory'], destination, model.uri)

        exported.set_int_custom_property('exported', 1)
        exported.set_int_custom_property('opset', int(exec_properties['opset']))
        exported.set_string_custom_property('source_model_version', version)
        exported.set_string_custom_property('edge_destination', destination)
        # A string: MLMD keeps doubles to 6 decimals, which would round a 2e-7 difference to 0.
        exported.set_string_custom_property('parity_max_abs_difference', f'{parity.max_abs_difference:.3e}')
        exported.set_int_custom_property('parity_examples', parity.examples)
        exported.set_float_custom_property('fp32_accuracy', fp32_accuracy)
        exported.set_int_custom_property('int8_shipped', int(int8['shipped']))
        exported.set_string_custom_property('int8_reason', int8['reason'])

    @staticmethod
    def _int8(input_dict, exec_properties, folder: str, input_name: str, pixels: np.ndarray, labels: np.ndarray,
              fp32_accuracy: float) -> Dict[str, Any]:
        """Quantizes on train examples; keeps model.int8.onnx only within the accuracy budget."""
        if not int(exec_properties['quantize_int8']):
            return {'shipped': False, 'accuracy': None, 'reason': 'INT8 quantization is off'}
        calibration, _ = _transformed(input_dict, exec_properties, 'train', int(exec_properties['calibration_examples']))
        int8_path = os.path.join(folder, INT8_FILE)
        proof.quantize_int8(os.path.join(folder, FP32_FILE), int8_path, calibration, input_name)
        int8_accuracy = proof.accuracy(proof.run(proof.session(int8_path), pixels), labels)
        allowed = float(exec_properties['max_int8_accuracy_drop'])
        if fp32_accuracy - int8_accuracy > allowed:
            fileio.remove(int8_path)
            return {'shipped': False, 'accuracy': int8_accuracy,
                    'reason': f'INT8 accuracy {int8_accuracy:.4f} is more than {allowed:g} below FP32 {fp32_accuracy:.4f}'}
        return {'shipped': True, 'accuracy': int8_accuracy,
                'reason': f'INT8 accuracy {int8_accuracy:.4f} within {allowed:g} of FP32 {fp32_accuracy:.4f}'}

    @staticmethod
    def _publish(folder: str, base: str, destination: str, model_uri: str) -> None:
        """Publishes the folder as `destination`, unless that version already holds this model's export."""
        existing = os.path.join(destination, METADATA_FILE)
        if fileio.exists(existing):
            if json.loads(io_utils.read_string_file(existing))['source']['model_uri'] == model_uri:
                logging.info('OnnxExporter: %s already holds this model; not exported again.', destination)
                return
            raise RuntimeError(f'{destination} already holds the export of another model')
        serving_pusher.remove_leftovers(base, METADATA_FILE)
        serving_pusher.publish_atomically(folder, destination, METADATA_FILE)
