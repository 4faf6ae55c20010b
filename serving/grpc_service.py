"""TF Serving's gRPC services (PredictionService, ModelService) on tensorflow-serving-api's stubs,
served by grpc.aio: a call holds no thread until its request has fully arrived, model calls run
in the shared InferencePool, and status and metadata calls are answered on the event loop."""
import asyncio
import functools
import time
from typing import Optional, Tuple

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2,
                                     model_management_pb2, model_pb2, model_service_pb2_grpc,
                                     predict_pb2, prediction_service_pb2_grpc, regression_pb2)

from petpark.serving import errors, tensor_proto
from petpark.serving.concurrency import BackgroundLoop, InferencePool
from petpark.serving.limits import Limits
from petpark.serving.metrics import ServingMetrics, rows_of
from petpark.serving.model_store import ModelStore
from petpark.serving.request_logging import ServingLog, origin_of
from petpark.serving.tf_servable import CLASSIFY_METHOD, DEFAULT_SIGNATURE, REGRESS_METHOD, classification_results

_ERROR_CODES = {grpc.StatusCode.OK: 0, grpc.StatusCode.UNKNOWN: 2}


def _spec(model_spec: model_pb2.ModelSpec) -> Tuple[str, Optional[int], Optional[str]]:
    if not model_spec.name:
        raise errors.invalid_argument('ModelSpec has no name specified.')
    choice = model_spec.WhichOneof('version_choice')
    version = model_spec.version.value if choice == 'version' else None
    label = model_spec.version_label if choice == 'version_label' else None
    return model_spec.name, version, label


def _aborting(method):
    """Turns ServingError into the gRPC status TF Serving would return."""
    @functools.wraps(method)
    async def wrapper(self, request, context):
        try:
            return await method(self, request, context)
        except errors.ServingError as e:
            await context.abort(e.code, e.message)
    return wrapper


def _in_pool(method):
    """A servicer method run in the shared inference pool, once its request has fully arrived,
    with the camera its metadata names (request_logging.ORIGIN_HEADER)."""
    @functools.wraps(method)
    async def wrapper(self, request, context):
        try:
            origin = origin_of(context.invocation_metadata() or ())
            return await self.pool.run(functools.partial(method, origin=origin), self, request)
        except errors.ServingError as e:
            await context.abort(e.code, e.message)
    return wrapper


def _serialized_examples(model_input, limits: Limits) -> np.ndarray:
    kind = model_input.WhichOneof('kind')
    if kind == 'example_list':
        examples = list(model_input.example_list.examples)
    elif kind == 'example_list_with_context':
        limits.check_rows(len(model_input.example_list_with_context.examples), 'The number of examples')
        context = model_input.example_list_with_context.context
        examples = []
        for example in model_input.example_list_with_context.examples:
            merged = tf.train.Example()
            merged.CopyFrom(context)
            merged.MergeFrom(example)
            examples.append(merged)
    else:
        raise errors.invalid_argument('Input is empty')
    if not examples:
        raise errors.invalid_argument('Input is empty')
    limits.check_rows(len(examples), 'The number of examples')
    serialized = np.array([e.SerializeToString() for e in examples], dtype=object)
    limits.check_inputs({'examples': serialized})
    return serialized


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):

    def __init__(self, store: ModelStore, metrics: ServingMetrics, pool: InferencePool, limits: Limits,
                 request_logs: Optional[ServingLog] = None):
        self.store, self.metrics, self.pool, self.limits = store, metrics, pool, limits
        self.request_logs = request_logs or ServingLog(None)

    def _fill_spec(self, spec: model_pb2.ModelSpec, name: str, version: int, signature: str) -> None:
        spec.name = name
        spec.version.value = version
        spec.signature_name = signature

    @_in_pool
    def Predict(self, request: predict_pb2.PredictRequest, origin: str = '') -> predict_pb2.PredictResponse:
        name, version, label = _spec(request.model_spec)
        signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        with self.metrics.request(name, 'predict', 'GRPC') as labels:
            inputs = {alias: tensor_proto.from_proto(tensor, alias, self.limits)
                      for alias, tensor in request.inputs.items()}
            self.limits.check_inputs(inputs)
            with self.store.acquire(name, version, label) as servable:
                labels['version'] = str(servable.version)
                tensor_proto.check_dtypes(request.inputs, servable.signature(signature_name))
                start = time.perf_counter()
                outputs = servable.run(signature_name, inputs, list(request.output_filter))
                micros = int((time.perf_counter() - start) * 1e6)
            self.metrics.served(name, rows_of(inputs), origin)
            self.request_logs.predict(name, servable.version, signature_name, inputs, outputs, origin,
                                      list(request.output_filter), micros)
            response = predict_pb2.PredictResponse()
            self._fill_spec(response.model_spec, name, servable.version, signature_name)
            for alias, value in outputs.items():
                response.outputs[alias].CopyFrom(tensor_proto.as_proto_field(value))
            return response

    def _examples_call(self, request, method: str, origin: str):
        name, version, label = _spec(request.model_spec)
        signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        api = 'classify' if method == CLASSIFY_METHOD else 'regress'
        with self.metrics.request(name, api, 'GRPC') as labels:
            examples = _serialized_examples(request.input, self.limits)
            with self.store.acquire(name, version, label) as servable:
                labels['version'] = str(servable.version)
                alias = servable.examples_signature(signature_name, method)
                outputs = servable.run(signature_name, {alias: examples})
            self.metrics.served(name, len(examples), origin)
            return name, servable.version, signature_name, outputs, examples

    @_in_pool
    def Classify(self, request: classification_pb2.ClassificationRequest, origin: str = ''):
        name, version, signature_name, outputs, examples = self._examples_call(request, CLASSIFY_METHOD, origin)
        results = classification_results(outputs)
        self.request_logs.classify(name, version, signature_name, list(examples), results, origin)
        response = classification_pb2.ClassificationResponse()
        self._fill_spec(response.model_spec, name, version, signature_name)
        for row in results:
            classifications = response.result.classifications.add()
            for label, score in row:
                classifications.classes.add(label=label, score=score)
        return response

    @_in_pool
    def Regress(self, request: regression_pb2.RegressionRequest, origin: str = ''):
        name, version, signature_name, outputs, _ = self._examples_call(request, REGRESS_METHOD, origin)
        response = regression_pb2.RegressionResponse()
        self._fill_spec(response.model_spec, name, version, signature_name)
        for value in np.reshape(outputs['outputs'], [-1]).tolist():
            response.result.regressions.add(value=value)
        return response

    @_aborting
    async def GetModelMetadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest, context):
        name, version, label = _spec(request.model_spec)
        if not request.metadata_field:
            raise errors.invalid_argument('GetModelMetadataRequest must specify at least one metadata_field')
        unsupported = [f for f in request.metadata_field if f != 'signature_def']
        if unsupported:
            raise errors.invalid_argument(f'Metadata field {unsupported[0]} is not supported')
        with self.store.acquire(name, version, label) as servable:
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            self._fill_spec(response.model_spec, name, servable.version, '')
            response.metadata['signature_def'].Pack(servable.signature_def_map())
            return response

    async def MultiInference(self, request, context):
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, 'MultiInference is not supported by this server')


class ModelService(model_service_pb2_grpc.ModelServiceServicer):

    def __init__(self, store: ModelStore):
        self.store = store

    @_aborting
    async def GetModelStatus(self, request: get_model_status_pb2.GetModelStatusRequest, context):
        name, version, label = _spec(request.model_spec)
        if label is not None:
            version = self.store.resolve_label(name, label)
        response = get_model_status_pb2.GetModelStatusResponse()
        for record in self.store.status(name, version):
            status = response.model_version_status.add(version=record.version, state=record.state)
            status.status.error_code = _ERROR_CODES[grpc.StatusCode.UNKNOWN if record.error else grpc.StatusCode.OK]
            status.status.error_message = record.error
        return response

    @_aborting
    async def HandleReloadConfigRequest(self, request: model_management_pb2.ReloadConfigRequest, context):
        await asyncio.to_thread(self.store.reload_config, request.config)  # loads models: seconds
        return model_management_pb2.ReloadConfigResponse()


class GrpcServer:
    """Both services on a grpc.aio server in a background event loop, bound at construction."""

    def __init__(self, store: ModelStore, host: str, port: int, metrics: ServingMetrics, pool: InferencePool,
                 limits: Limits, request_logs: Optional[ServingLog] = None):
        self._background = BackgroundLoop('grpc-loop')
        self._server = self._background.run(self._create(store, metrics, pool, limits, request_logs))
        self.port = self._background.run(self._bind(host, port))

    @staticmethod
    async def _create(store, metrics, pool, limits, request_logs) -> grpc.aio.Server:
        grace_ms = 30_000
        handshake_ms = int(limits.grpc_handshake_timeout_seconds * 1000)
        server = grpc.aio.server(options=[
            ('grpc.max_receive_message_length', limits.max_request_bytes),
            ('grpc.max_send_message_length', limits.max_request_bytes),
            ('grpc.max_allowed_incoming_connections', limits.max_grpc_connections),
            # Advertised to clients, which queue calls beyond it. gRPC's overload protection would also
            # count streams that ended but are not yet freed, refusing calls within the advertised
            # number (RST_STREAM REFUSED_STREAM): a transport error a well-behaved client cannot avoid.
            ('grpc.max_concurrent_streams', limits.grpc_max_streams_per_connection),
            ('grpc.http.overload_protection', 0),
            ('grpc.server_handshake_timeout_ms', handshake_ms),
            ('grpc.http2.settings_timeout', handshake_ms),
            ('grpc.max_connection_idle_ms', int(limits.grpc_idle_timeout_seconds * 1000)),
            ('grpc.max_connection_age_ms', int(limits.grpc_max_connection_age_seconds * 1000)),
            ('grpc.max_connection_age_grace_ms', grace_ms),
        ])
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionService(store, metrics, pool, limits, request_logs), server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(store), server)
        return server

    async def _bind(self, host: str, port: int) -> int:
        bound = self._server.add_insecure_port(f'{host}:{port}')
        if bound == 0:
            raise OSError(f'could not bind gRPC to {host}:{port}')
        return bound

    def start(self) -> 'GrpcServer':
        self._background.run(self._server.start())
        return self

    def stop(self, grace: Optional[float] = None) -> None:
        """Stops taking calls; lets calls in progress finish for `grace` seconds."""
        self._background.run(self._server.stop(grace))
        self._background.close()

