"""ServingValidator executor: the candidate model in a real model server, queried over gRPC."""
import os
import statistics
import tempfile
import time
from typing import Any, Dict, List

import grpc
import numpy as np
import tensorflow as tf
from absl import logging
from tfx.components.infra_validator import error_types, request_builder, types as iv_types
from tfx.components.infra_validator.model_server_clients import tensorflow_serving_client
from tfx.dsl.components.base import base_executor
from tfx.proto import infra_validator_pb2
from tfx.types import artifact, artifact_utils
from tfx.utils import io_utils, path_utils
from tfx.utils.model_paths import tf_serving_flavor
from tensorflow_serving.apis import classification_pb2

from petpark.components.common import facts
from petpark.components.serving_validator import runners

MODEL_KEY, EXAMPLES_KEY, BLESSING_KEY = 'model', 'examples', 'blessing'
BLESSED_FILE, NOT_BLESSED_FILE = 'INFRA_BLESSED', 'INFRA_NOT_BLESSED'  # TFX InfraValidator's markers
_POLL_SECONDS = 0.5


class ValidationFailed(RuntimeError):
    """The model did not load, answer, agree with itself in-process, or answer in time."""


class Client(tensorflow_serving_client.TensorFlowServingClient):
    """TFX's TF Serving client, with a deadline on every call and the answers kept."""

    def __init__(self, endpoint: str, model_name: str, timeout_seconds: float):
        super().__init__(endpoint, model_name)
        self._timeout = timeout_seconds

    def _GetModelStatus(self):
        request = tensorflow_serving_client.get_model_status_pb2.GetModelStatusRequest(
            model_spec=tensorflow_serving_client.model_pb2.ModelSpec(name=self._model_name))
        return self._model_service.GetModelStatus(request, timeout=self._timeout)

    def load_errors(self) -> str:
        """The error messages of versions that ended (failed to load), for the reason."""
        try:
            response = self._GetModelStatus()
        except grpc.RpcError as e:
            return e.details() or str(e.code())
        return '; '.join(s.status.error_message for s in response.model_version_status if s.status.error_message)

    def answer(self, request) -> Dict[str, np.ndarray]:
        """The server's answer to a Predict or Classify request, as output name -> array."""
        if isinstance(request, classification_pb2.ClassificationRequest):
            result = self._prediction_service.Classify(request, timeout=self._timeout).result
            return {'classes': np.array([[c.label.encode() for c in row.classes] for row in result.classifications]),
                    'scores': np.array([[c.score for c in row.classes] for row in result.classifications])}
        response = self._prediction_service.Predict(request, timeout=self._timeout)
        return {key: tf.make_ndarray(proto) for key, proto in response.outputs.items()}


def wait_until_available(runner, client: Client, deadline: float) -> None:
    """Until every version of the model is AVAILABLE; fails at once when one ENDs or the server exits."""
    while time.time() < deadline:
        exited = getattr(runner, 'exited', lambda: None)()
        if exited is not None:
            raise ValidationFailed(f'the server exited with code {exited} while loading the model')
        status = client._GetServingStatus()  # pylint: disable=protected-access
        if status == iv_types.ModelServingStatus.READY:
            return
        if status == iv_types.ModelServingStatus.UNAVAILABLE:
            raise ValidationFailed(f'the server failed to load the model: {client.load_errors()}')
        time.sleep(_POLL_SECONDS)
    raise ValidationFailed('the model was not AVAILABLE within the loading time limit')


def in_process_outputs(saved_model_path: str, requests) -> List[Dict[str, np.ndarray]]:
    """What the SavedModel answers to each PredictRequest when called in this process."""
    model = tf.saved_model.load(saved_model_path)
    answers = []
    for request in requests:
        signature = model.signatures[request.model_spec.signature_name or 'serving_default']
        if isinstance(request, classification_pb2.ClassificationRequest):
            serialized = [e.SerializeToString() for e in request.input.example_list.examples]
            inputs = {next(iter(signature.structured_input_signature[1])): tf.constant(serialized)}
        else:
            inputs = {key: tf.make_ndarray(proto) for key, proto in request.inputs.items()}
        answers.append({key: value.numpy() for key, value in signature(**inputs).items()})
    return answers


def compare(served: List[Dict[str, np.ndarray]], local: List[Dict[str, np.ndarray]]) -> float:
    """Largest absolute difference between served and in-process answers; raises on a missing
    output or a different shape."""
    largest = 0.0
    for index, (answer, expected) in enumerate(zip(served, local)):
        if set(answer) != set(expected):
            raise ValidationFailed(f'request {index}: the server answered outputs {sorted(answer)}, '
                                   f'the model in-process {sorted(expected)}')
        for key, value in expected.items():
            if answer[key].shape != value.shape:
                raise ValidationFailed(f'request {index}: output {key!r} has shape {answer[key].shape} '
                                       f'from the server, {value.shape} in-process')
            if value.dtype.kind in 'fiu':
                largest = max(largest, float(np.max(np.abs(answer[key].astype(np.float64) - value), initial=0.0)))
            elif not np.array_equal(answer[key], value):
                raise ValidationFailed(f'request {index}: output {key!r} differs from the in-process answer')
    return largest


class Executor(base_executor.BaseExecutor):
    """See component.ServingValidator."""

    def Do(self, input_dict: Dict[str, List[artifact.Artifact]], output_dict: Dict[str, List[artifact.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        model = artifact_utils.get_single_instance(input_dict[MODEL_KEY])
        examples = artifact_utils.get_single_instance(input_dict[EXAMPLES_KEY])
        blessing = artifact_utils.get_single_instance(output_dict[BLESSING_KEY])
        server, model_name = exec_properties['server'], exec_properties['model_name']
        blessing.set_string_custom_property('server', server)
        saved_model = path_utils.serving_model_path(model.uri)
        requests = request_builder.build_requests(
            model_name=model_name, model=model, examples=examples,
            request_spec=infra_validator_pb2.RequestSpec(
                tensorflow_serving=infra_validator_pb2.TensorFlowServingRequestSpec(
                    signature_names=[exec_properties['signature_name']]),
                split_name=exec_properties['split'], num_examples=int(exec_properties['num_examples'])))
        with tempfile.TemporaryDirectory(prefix='serving_validator_') as work:
            version = int(time.time())
            model_path = tf_serving_flavor.make_model_path(work, model_name, version)
            io_utils.copy_dir(saved_model, model_path)
            blessing.set_string_custom_property('model_version', str(version))
            try:
                figures = self._validate(server, exec_properties, model_path, model_name, requests, saved_model)
            except (ValidationFailed, error_types.InfraValidationError) as e:
                self._mark(blessing, False, f'{server}: {e}', {})
                return
        for name, value in figures.items():
            blessing.set_float_custom_property(name, value)
        self._mark(blessing, True, '', figures)

    def _validate(self, server, exec_properties, model_path, model_name, requests, saved_model) -> Dict[str, float]:
        runner = runners.make_runner(server, model_path, model_name, exec_properties['server_binary'])
        max_latency_ms = float(exec_properties['max_latency_ms'])
        started = time.time()
        deadline = started + float(exec_properties['max_loading_seconds'])
        try:
            logging.info('ServingValidator: starting %r for %s', runner, model_path)
            runner.Start()
            runner.WaitUntilRunning(deadline)
            client = Client(runner.GetEndpoint(), model_name, timeout_seconds=max(10.0, max_latency_ms / 100))
            wait_until_available(runner, client, deadline)
            loaded_seconds = time.time() - started
            answers, latencies = [], []
            for index, request in enumerate(requests):
                sent = time.perf_counter()
                try:
                    answers.append(client.answer(request))
                except grpc.RpcError as e:
                    raise ValidationFailed(f'request {index} failed: {e.code().name}: {e.details()}') from None
                latencies.append((time.perf_counter() - sent) * 1000)
        except Exception:
            logs = runner.GetLogs()
            if logs:
                logging.error('ServingValidator: server output\n%s', logs)
            raise
        finally:
            runner.Stop()
            logging.info('ServingValidator: stopped %r', runner)
        difference = compare(answers, in_process_outputs(saved_model, requests))
        tolerance = float(exec_properties['tolerance'])
        if difference > tolerance:
            raise ValidationFailed(f'answers differ from the in-process prediction by {difference:.3g} '
                                   f'(tolerance {tolerance:g})')
        warm = latencies[1:] or latencies  # the first call traces the graph
        p99 = float(np.percentile(warm, 99))
        if p99 > max_latency_ms:
            raise ValidationFailed(f'p99 latency {p99:.1f} ms over {len(warm)} requests is above the bound '
                                   f'{max_latency_ms:g} ms')
        return {'latency_p50_ms': statistics.median(warm), 'latency_p99_ms': p99,
                'loading_seconds': loaded_seconds, 'requests': float(len(requests)),
                'max_abs_difference': difference}

    @staticmethod
    def _mark(blessing: artifact.Artifact, blessed: bool, reason: str, figures: Dict[str, float]) -> None:
        io_utils.write_string_file(os.path.join(blessing.uri, BLESSED_FILE if blessed else NOT_BLESSED_FILE), '')
        blessing.set_int_custom_property('blessed', int(blessed))
        facts.contribute(blessing, 'serving_check', {
            'blessed': blessed, 'server': blessing.get_string_custom_property('server'), 'reason': reason or None,
            **{name: figures.get(name) for name in ('latency_p50_ms', 'latency_p99_ms', 'requests',
                                                    'max_abs_difference')}})
        if reason:
            blessing.set_string_custom_property('reason', reason)
            logging.warning('ServingValidator: not blessed: %s', reason)
        else:
            logging.info('ServingValidator: blessed.')
