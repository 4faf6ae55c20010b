"""TF Serving's gRPC services (PredictionService, ModelService) on tensorflow-serving-api's stubs."""
import functools
from concurrent import futures
from typing import Optional, Tuple

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2,
                                     model_management_pb2, model_pb2, model_service_pb2_grpc,
                                     predict_pb2, prediction_service_pb2_grpc, regression_pb2)

from petpark.serving import errors
from petpark.serving.metrics import ServingMetrics
from petpark.serving.model_store import ModelStore
from petpark.serving.tf_servable import CLASSIFY_METHOD, DEFAULT_SIGNATURE, REGRESS_METHOD, classification_results

MAX_MESSAGE_BYTES = 2 ** 31 - 1  # TF Serving's limit (INT32_MAX)
_ERROR_CODES = {grpc.StatusCode.OK: 0, grpc.StatusCode.UNKNOWN: 2}
# TensorProto's typed repeated field for each dtype (tensorflow/core/framework/tensor.proto).
_TYPED_FIELDS = {
    tf.float32: 'float_val', tf.float64: 'double_val', tf.int32: 'int_val', tf.int16: 'int_val',
    tf.int8: 'int_val', tf.uint8: 'int_val', tf.uint16: 'int_val', tf.int64: 'int64_val',
    tf.uint32: 'uint32_val', tf.uint64: 'uint64_val', tf.bool: 'bool_val', tf.string: 'string_val',
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
        pairs = np.stack([flat.real, flat.imag], axis=-1).ravel().tolist()
        (proto.scomplex_val if dtype == tf.complex64 else proto.dcomplex_val).extend(pairs)
    elif dtype in _TYPED_FIELDS:
        getattr(proto, _TYPED_FIELDS[dtype]).extend(flat.tolist())
    else:  # no typed field (e.g. bfloat16): raw bytes, as TF does for those
        proto.tensor_content = array.tobytes()
    return proto


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
    def wrapper(self, request, context):
        try:
            return method(self, request, context)
        except errors.ServingError as e:
            context.abort(e.code, e.message)
    return wrapper


def _serialized_examples(model_input) -> np.ndarray:
    kind = model_input.WhichOneof('kind')
    if kind == 'example_list':
        examples = list(model_input.example_list.examples)
    elif kind == 'example_list_with_context':
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
    return np.array([e.SerializeToString() for e in examples], dtype=object)


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):

    def __init__(self, store: ModelStore, metrics: ServingMetrics):
        self.store, self.metrics = store, metrics

    def _fill_spec(self, spec: model_pb2.ModelSpec, name: str, version: int, signature: str) -> None:
        spec.name = name
        spec.version.value = version
        spec.signature_name = signature

    @_aborting
    def Predict(self, request: predict_pb2.PredictRequest, context) -> predict_pb2.PredictResponse:
        name, version, label = _spec(request.model_spec)
        signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        with self.metrics.request(name, 'predict', 'GRPC') as labels, \
                self.store.acquire(name, version, label) as servable:
            labels['version'] = str(servable.version)
            inputs = {alias: tf.make_ndarray(tensor) for alias, tensor in request.inputs.items()}
            outputs = servable.run(signature_name, inputs, list(request.output_filter))
            response = predict_pb2.PredictResponse()
            self._fill_spec(response.model_spec, name, servable.version, signature_name)
            for alias, value in outputs.items():
                response.outputs[alias].CopyFrom(as_proto_field(value))
            return response

    def _examples_call(self, request, method: str):
        name, version, label = _spec(request.model_spec)
        signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        api = 'classify' if method == CLASSIFY_METHOD else 'regress'
        with self.metrics.request(name, api, 'GRPC') as labels, self.store.acquire(name, version, label) as servable:
            labels['version'] = str(servable.version)
            alias = servable.examples_signature(signature_name, method)
            outputs = servable.run(signature_name, {alias: _serialized_examples(request.input)})
            return name, servable.version, signature_name, outputs

    @_aborting
    def Classify(self, request: classification_pb2.ClassificationRequest, context):
        name, version, signature_name, outputs = self._examples_call(request, CLASSIFY_METHOD)
        response = classification_pb2.ClassificationResponse()
        self._fill_spec(response.model_spec, name, version, signature_name)
        for row in classification_results(outputs):
            classifications = response.result.classifications.add()
            for label, score in row:
                classifications.classes.add(label=label, score=score)
        return response

    @_aborting
    def Regress(self, request: regression_pb2.RegressionRequest, context):
        name, version, signature_name, outputs = self._examples_call(request, REGRESS_METHOD)
        response = regression_pb2.RegressionResponse()
        self._fill_spec(response.model_spec, name, version, signature_name)
        for value in np.reshape(outputs['outputs'], [-1]).tolist():
            response.result.regressions.add(value=value)
        return response

    @_aborting
    def GetModelMetadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest, context):
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

    def MultiInference(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, 'MultiInference is not supported by this server')


class ModelService(model_service_pb2_grpc.ModelServiceServicer):

    def __init__(self, store: ModelStore):
        self.store = store

    @_aborting
    def GetModelStatus(self, request: get_model_status_pb2.GetModelStatusRequest, context):
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
    def HandleReloadConfigRequest(self, request: model_management_pb2.ReloadConfigRequest, context):
        self.store.reload_config(request.config)
        return model_management_pb2.ReloadConfigResponse()


def make_server(store: ModelStore, host: str, port: int, metrics: Optional[ServingMetrics] = None,
                workers: int = 64) -> Tuple[grpc.Server, int]:
    """A started-ready gRPC server with both services; returns it and the bound port."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix='grpc'),
                         options=[('grpc.max_receive_message_length', MAX_MESSAGE_BYTES),
                                  ('grpc.max_send_message_length', MAX_MESSAGE_BYTES)])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(store, metrics or ServingMetrics()), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(store), server)
    bound = server.add_insecure_port(f'{host}:{port}')
    if bound == 0:
        raise OSError(f'could not bind gRPC to {host}:{port}')
    return server, bound
