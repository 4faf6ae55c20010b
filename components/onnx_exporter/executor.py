"""OnnxExporter executor: convert, prove, optionally quantize, and publish for the edge boxes."""
import hashlib
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
from tfx.utils import path_utils

from petpark.components.common import facts, storage
from petpark.components.onnx_exporter import conversion, examples, proof

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


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def _transformed(input_dict, exec_properties, split: str, limit: int):
    return examples.transformed(
        artifact_utils.get_single_instance(input_dict[EXAMPLES_KEY]), split,
        artifact_utils.get_single_uri(input_dict[TRANSFORM_GRAPH_KEY]),
        json.loads(exec_properties['raw_feature_keys']), exec_properties['pixels_key'],
        exec_properties['label_key'], limit, float(json.loads(exec_properties['pixel_contract'])['scale']))


def int8_verdict(fp32_accuracy: float, int8_accuracy: float, max_drop: float) -> Dict[str, Any]:
    """Whether the INT8 model ships: its accuracy (a fraction) at most `max_drop` below FP32's."""
    if fp32_accuracy - int8_accuracy > max_drop:
        return {'shipped': False, 'accuracy': int8_accuracy,
                'reason': f'INT8 accuracy {int8_accuracy:.4f} is more than {max_drop:g} below FP32 {fp32_accuracy:.4f}'}
    return {'shipped': True, 'accuracy': int8_accuracy,
            'reason': f'INT8 accuracy {int8_accuracy:.4f} within {max_drop:g} of FP32 {fp32_accuracy:.4f}'}


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
        contract = json.loads(exec_properties['pixel_contract'])
        class_names = json.loads(exec_properties['class_names'])
        with storage.local_stage(exported.uri) as stage:  # onnx and onnxruntime read and write local files
            fp32_path = os.path.join(stage, FP32_FILE)
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
            int8 = self._int8(input_dict, exec_properties, stage, input_name, pixels, labels, fp32_accuracy)
            shipped = [FP32_FILE] + ([INT8_FILE] if int8['shipped'] else [])

            evaluation = _single(input_dict, EVALUATION_KEY)
            positive = len(class_names) - 1
            metadata = {
                'format': FORMAT,
                'model_name': exec_properties['model_name'],
                'version': version,
                'files': {'fp32': FP32_FILE, 'int8': INT8_FILE if int8['shipped'] else None},
                'sha256': {name: file_sha256(os.path.join(stage, name)) for name in shipped},
                'opset': int(exec_properties['opset']),
                'input': {
                    'name': input_name, 'dtype': 'float32', 'layout': 'NHWC',
                    'shape': [-1, *compared.shape[1:]], 'colour_order': contract['colour_order'],
                    'resize': {'height': int(compared.shape[1]), 'width': int(compared.shape[2]),
                               'method': contract['resize_method'], 'antialias': contract['antialias'],
                               'keep_aspect_ratio': contract['keep_aspect_ratio'],
                               'as': f"tf.image.resize(float pixels, [height, width], method='{contract['resize_method']}', "
                                     f"antialias={contract['antialias']})"},
                    'round': contract['round'],
                    'scale': {'divide_by': round(1.0 / contract['scale'], 9), 'clip': [0.0, float(contract['max_level'])]},
                },
                'output': {'name': fp32.get_outputs()[0].name, 'class_names': class_names,
                           'positive_class': class_names[positive],
                           'decision_threshold': float(exec_properties['decision_threshold'])},
                'source': {'saved_model_version': version, 'signature': signature_name, 'model_uri': model.uri},
                'parity': {'examples': parity.examples, 'max_abs_difference': parity.max_abs_difference,
                           'same_class': parity.same_class, 'tolerance': tolerance},
                'accuracy': {'examples': int(len(labels)), 'fp32': fp32_accuracy, 'int8': int8['accuracy']},
                'quantization': int8,
                'evaluation': facts.overall_metrics(evaluation.uri, positive) if evaluation is not None else {},
            }
            with open(os.path.join(stage, METADATA_FILE), 'w') as f:
                json.dump(metadata, f, indent=1)
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
        facts.contribute(exported, 'edge', {
            'destination': destination, 'opset': int(exec_properties['opset']), 'int8': bool(int8['shipped']),
            'parity_max_abs_difference': f'{parity.max_abs_difference:.3e}'})

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
        verdict = int8_verdict(fp32_accuracy, int8_accuracy, float(exec_properties['max_int8_accuracy_drop']))
        if not verdict['shipped']:
            os.remove(int8_path)
        return verdict

    @staticmethod
    def _publish(folder: str, base: str, destination: str, model_uri: str) -> None:
        """Publishes the folder as `destination`, unless that version already holds this model's export."""
        existing = os.path.join(destination, METADATA_FILE)
        if fileio.exists(existing):
            if json.loads(storage.read_text(existing))['source']['model_uri'] == model_uri:
                logging.info('OnnxExporter: %s already holds this model; not exported again.', destination)
                return
            raise RuntimeError(f'{destination} already holds the export of another model')
        storage.remove_leftovers(base, METADATA_FILE)
        storage.publish_atomically(folder, destination, METADATA_FILE)
