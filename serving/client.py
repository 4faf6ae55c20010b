"""Clients for the petpark model over TF Serving's REST and gRPC APIs (ours or the official image)."""
import base64
import dataclasses
from typing import List, Sequence

import requests

IMAGE_SIGNATURE = 'serving_image_bytes'
GRPC_MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # Python gRPC clients default to 4 MiB


@dataclasses.dataclass
class Prediction:
    label: str
    probability: float
    scores: dict  # {class name: probability}


def _prediction(classes: Sequence, scores: Sequence[float]) -> Prediction:
    names = [c.decode() if isinstance(c, bytes) else str(c) for c in classes]
    best = max(range(len(scores)), key=lambda i: scores[i])
    return Prediction(names[best], float(scores[best]), dict(zip(names, map(float, scores))))


class ServerError(RuntimeError):
    """The server answered with an error (its message and HTTP or gRPC status)."""


class RestClient:
    """POST /v1/models/<model>:predict with {"b64": ...} images."""

    def __init__(self, server: str, model: str = 'petpark', timeout: float = 30.0):
        self.url = f'http://{server}/v1/models/{model}:predict'
        self.timeout = timeout
        self._session = requests.Session()

    def predict(self, images: Sequence[bytes]) -> List[Prediction]:
        body = {'signature_name': IMAGE_SIGNATURE,
                'instances': [{'b64': base64.b64encode(data).decode('ascii')} for data in images]}
        reply = self._session.post(self.url, json=body, timeout=self.timeout)
        if reply.status_code != 200:
            try:
                message = reply.json().get('error', reply.text)
            except ValueError:
                message = reply.text
            raise ServerError(f'HTTP {reply.status_code}: {message}')
        return [_prediction(row['classes'], row['scores']) for row in reply.json()['predictions']]


class GrpcClient:
    """PredictionService.Predict with a DT_STRING tensor of encoded images."""

    def __init__(self, server: str, model: str = 'petpark', timeout: float = 30.0):
        import grpc
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
        self._grpc, self._tf, self._predict_pb2 = grpc, tf, predict_pb2
        self._channel = grpc.insecure_channel(server, options=[
            ('grpc.max_receive_message_length', GRPC_MAX_MESSAGE_BYTES),
            ('grpc.max_send_message_length', GRPC_MAX_MESSAGE_BYTES)])
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self.model, self.timeout = model, timeout

    def predict(self, images: Sequence[bytes]) -> List[Prediction]:
        request = self._predict_pb2.PredictRequest()
        request.model_spec.name = self.model
        request.model_spec.signature_name = IMAGE_SIGNATURE
        request.inputs['image_bytes'].CopyFrom(self._tf.make_tensor_proto(list(images), dtype=self._tf.string))
        try:
            response = self._stub.Predict(request, timeout=self.timeout)
        except self._grpc.RpcError as e:
            raise ServerError(f'gRPC {e.code().name}: {e.details()}') from None
        classes = self._tf.make_ndarray(response.outputs['classes'])
        scores = self._tf.make_ndarray(response.outputs['scores'])
        return [_prediction(c, s) for c, s in zip(classes, scores)]

    def close(self) -> None:
        self._channel.close()


def predict_files(server: str, paths: Sequence[str], use_grpc: bool = False, model: str = 'petpark') -> List[Prediction]:
    """Reads image files and classifies them in one request."""
    images = []
    for path in paths:
        with open(path, 'rb') as f:
            images.append(f.read())
    client = GrpcClient(server, model) if use_grpc else RestClient(server, model)
    return client.predict(images)
