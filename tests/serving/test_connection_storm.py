"""A thousand connections opened and dropped at once: both servers stay up and keep answering."""
import resource
import socket

import grpc
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import prediction_service_pb2_grpc

from petpark.serving.server import RestServer
from tests.serving.model_fixtures import linear_predict_request, make_server, serve_linear_model

CONNECTIONS = 1000


def storm(port: int) -> int:
    """Opens CONNECTIONS sockets (some send half a request), then drops them all; returns how many opened."""
    opened = []
    for i in range(CONNECTIONS):
        s = socket.create_connection(('127.0.0.1', port), timeout=5)
        if i % 3 == 0:
            s.sendall(b'POST /v1/models/half_plus_two:predict HTTP/1.1\r\nContent-Length: 100\r\n\r\n{"inst')
        opened.append(s)
    for s in opened:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b'\x01\x00\x00\x00\x00\x00\x00\x00')  # reset
        s.close()
    return len(opened)


@pytest.fixture
def open_files_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 3 * CONNECTIONS:
        pytest.skip(f'open-files hard limit {hard} is below {3 * CONNECTIONS}')
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 3 * CONNECTIONS), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_servers_survive_a_connection_storm(tmp_path, open_files_limit):
    store = serve_linear_model(str(tmp_path / 'half_plus_two'))
    rest = RestServer(store, port=0).start()
    grpc_server, grpc_port = make_server(store, '127.0.0.1', 0)
    grpc_server.start()
    try:
        assert storm(rest.port) == CONNECTIONS
        assert storm(grpc_port) == CONNECTIONS
        reply = requests.post(f'http://127.0.0.1:{rest.port}/v1/models/half_plus_two:predict',
                              json={'instances': [2.0]}, timeout=30)
        assert reply.json() == {'predictions': [3.0]}
        request = linear_predict_request(values=[2.0])
        with grpc.insecure_channel(f'127.0.0.1:{grpc_port}') as channel:
            response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
        assert tf.make_ndarray(response.outputs['y']).tolist() == [3.0]
    finally:
        rest.stop()
        grpc_server.stop(grace=None)
