"""Each documented serving bound, shown to hold: a request or connection just over it is refused or
closed, so a test here fails when the bound is removed. Servers run in this process on the
half_plus_two model; a held model (an event) stands for a busy one, so no order is timed."""
import base64
import collections
import contextlib
import io
import resource
import socket
import struct
import threading
from typing import Dict, Iterator, Optional, Tuple

import grpc
import hpack
import pytest
import requests
from PIL import Image
from tensorflow_serving.apis import classification_pb2, get_model_status_pb2, model_service_pb2_grpc, \
    prediction_service_pb2_grpc

from petpark.serving import main
from petpark.serving.concurrency import InferencePool
from petpark.serving.limits import Limits, fit_connections
from petpark.serving.metrics import ServingMetrics
from petpark.serving.model_store import ModelStore
from petpark.serving.server import RestServer
from tests.serving.model_fixtures import HeldModel, linear_predict_request, make_server, serve_held_linear_model, \
    serve_linear_model

MODEL = 'half_plus_two'
DATA, HEADERS, RST_STREAM, SETTINGS, GOAWAY = 0, 1, 3, 4, 7
END_HEADERS, ACK = 0x4, 0x1
MAX_CONCURRENT_STREAMS, REFUSED_STREAM = 3, 7


@contextlib.contextmanager
def serving(store: ModelStore, limits: Limits, pool: Optional[InferencePool] = None,
            held: Optional[HeldModel] = None) -> Iterator[Tuple[int, int]]:
    """REST and gRPC on `store` with `limits`; yields (rest port, gRPC port). On the way out the
    `held` model is released, so that calls it holds end even when the test failed."""
    pool = pool or InferencePool(workers=8, max_inflight=limits.max_inflight_requests)
    rest = RestServer(store, port=0, pool=pool, limits=limits).start()
    grpc_server, grpc_port = make_server(store, '127.0.0.1', 0, ServingMetrics(), pool, limits)
    grpc_server.start()
    try:
        yield rest.port, grpc_port
    finally:
        if held:
            held.release.set()
        rest.stop()
        grpc_server.stop(grace=None)
        pool.shutdown()


@pytest.fixture
def store(tmp_path):
    return serve_linear_model(str(tmp_path / MODEL))


@pytest.fixture
def held(tmp_path):
    """A store whose model holds every call until model.release is set."""
    return serve_held_linear_model(str(tmp_path / MODEL))


def rpc_error(call, request, **kwargs) -> Tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as error:
        call(request, timeout=30, **kwargs)
    return error.value.code(), error.value.details()


def predict_url(rest_port: int, method: str = 'predict') -> str:
    return f'http://127.0.0.1:{rest_port}/v1/models/{MODEL}:{method}'


class RawHttp2:
    """A hand-driven HTTP/2 client connection, frame by frame, to do what gRPC clients never do:
    stay idle, never acknowledge SETTINGS, open streams beyond the server's limit."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(('127.0.0.1', port), timeout=10)
        self.encoder, self.received = hpack.Encoder(), b''
        self.sock.sendall(b'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n' + self.frame(SETTINGS, 0, 0, b''))

    @staticmethod
    def frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
        return len(payload).to_bytes(3, 'big') + bytes([kind, flags]) + stream.to_bytes(4, 'big') + payload

    def next_frame(self, seconds: float) -> Optional[Tuple[int, int, int, bytes]]:
        """(type, flags, stream, payload); None once the server closed the connection."""
        self.sock.settimeout(seconds)
        while len(self.received) < 9 or len(self.received) < 9 + int.from_bytes(self.received[:3], 'big'):
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b''
            if not chunk:
                return None
            self.received += chunk
        length = int.from_bytes(self.received[:3], 'big')
        kind, flags, stream = self.received[3], self.received[4], int.from_bytes(self.received[5:9], 'big') & 0x7fffffff
        payload, self.received = self.received[9:9 + length], self.received[9 + length:]
        return kind, flags, stream, payload

    def wait_for(self, kind: int, seconds: float = 10) -> Optional[Tuple[int, int, int, bytes]]:
        """The next frame of `kind` (None if the connection closes first); fails after `seconds`."""
        while True:
            try:
                frame = self.next_frame(seconds)
            except socket.timeout:
                raise AssertionError(f'no frame of type {kind} within {seconds} s') from None
            if frame is None or frame[0] == kind:
                return frame

    def handshake(self) -> Dict[int, int]:
        """Reads the server's SETTINGS, acknowledges them; returns them."""
        while True:
            kind, flags, _, payload = self.wait_for(SETTINGS)
            if not flags & ACK:
                self.sock.sendall(self.frame(SETTINGS, ACK, 0, b''))
                return dict(struct.unpack('>HI', payload[i:i + 6]) for i in range(0, len(payload), 6))

    def open_stream(self, stream: int) -> None:
        """A Predict call that announces a 1,000-byte message and sends 2 bytes of it."""
        headers = self.encoder.encode([
            (':method', 'POST'), (':scheme', 'http'), (':authority', 'localhost'),
            (':path', '/tensorflow.serving.PredictionService/Predict'), ('content-type', 'application/grpc'),
            ('te', 'trailers')])
        self.sock.sendall(self.frame(HEADERS, END_HEADERS, stream, headers) +
                          self.frame(DATA, 0, stream, b'\x00' + (1000).to_bytes(4, 'big') + b'\x0a\x05'))

    def closed_within(self, seconds: float) -> bool:
        try:
            while self.next_frame(seconds) is not None:
                pass
        except socket.timeout:
            return False
        return True

    def close(self) -> None:
        self.sock.close()


# -- request size ------------------------------------------------------------------------------
def test_max_tensor_elements_refuses_a_tensor_before_the_model(store):
    with serving(store, Limits(max_tensor_elements=10)) as (rest_port, grpc_port):
        with grpc.insecure_channel(f'127.0.0.1:{grpc_port}') as channel:
            predict = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict
            assert len(predict(linear_predict_request(values=[1.0] * 10), timeout=30).outputs['y'].float_val) == 10
            code, details = rpc_error(predict, linear_predict_request(values=[1.0] * 11))
        reply = requests.post(predict_url(rest_port), json={'inputs': [1.0] * 11}, timeout=30)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert 'is 11, above the server limit max_tensor_elements=10 (petpark serve --max_tensor_elements)' in details
    assert reply.status_code == 400 and 'max_tensor_elements=10' in reply.json()['error']


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new('L', (width, height)).save(buffer, format='PNG')
    return buffer.getvalue()


def test_max_image_pixels_holds_for_images_inside_tf_examples(store):
    image = png(20, 20)
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name, request.model_spec.signature_name = MODEL, 'classify_x_to_y'
    example = request.input.example_list.examples.add()
    example.features.feature['x'].float_list.value.append(2.0)
    example.features.feature['photo'].bytes_list.value.append(image)
    body = {'signature_name': 'classify_x_to_y',
            'examples': [{'x': 2.0, 'photo': {'b64': base64.b64encode(image).decode()}}]}
    with serving(store, Limits(max_image_pixels=400)) as (rest_port, grpc_port):
        with grpc.insecure_channel(f'127.0.0.1:{grpc_port}') as channel:
            classify = prediction_service_pb2_grpc.PredictionServiceStub(channel).Classify
            assert classify(request, timeout=30).result.classifications[0].classes[0].score == pytest.approx(3.0)
            assert requests.post(predict_url(rest_port, 'classify'), json=body, timeout=30).ok
    with serving(store, Limits(max_image_pixels=399)) as (rest_port, grpc_port):
        with grpc.insecure_channel(f'127.0.0.1:{grpc_port}') as channel:
            code, details = rpc_error(prediction_service_pb2_grpc.PredictionServiceStub(channel).Classify, request)
        reply = requests.post(predict_url(rest_port, 'classify'), json=body, timeout=30)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and 'max_image_pixels=399' in details and '20 x 20' in details
    assert reply.status_code == 400 and 'max_image_pixels=399' in reply.json()['error']


# -- requests at once --------------------------------------------------------------------------
def test_max_inflight_requests_is_resource_exhausted_and_429(held):
    store, model = held
    limits = Limits(max_inflight_requests=2)
    with serving(store, limits, InferencePool(workers=4, max_inflight=2), model) as (rest_port, grpc_port):
        with grpc.insecure_channel(f'127.0.0.1:{grpc_port}') as channel:
            predict = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict
            running = [predict.future(linear_predict_request(), timeout=60) for _ in range(2)]
            model.wait_for_calls(2)
            code, details = rpc_error(predict, linear_predict_request())
            reply = requests.post(predict_url(rest_port), json={'instances': [1.0]}, timeout=30)
            model.release.set()
            answers = [list(call.result().outputs['y'].float_val) for call in running]
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert 'max_inflight_requests=2 (petpark serve --max_inflight_requests)' in details
    assert reply.status_code == 429 and 'max_inflight_requests=2' in reply.json()['error']
    assert answers == [[2.5, 3.0]] * 2


def outcomes(calls) -> collections.Counter:
    counts = collections.Counter()
    for call in calls:
        try:
            call.result()
            counts['OK'] += 1
        except grpc.RpcError as e:
            counts[e.code().name] += 1
    return counts


def test_calls_beyond_a_connections_streams_wait_in_the_client(held):
    """TF Serving clients multiplex every call on one channel: calls beyond the connection's
    grpc_max_streams_per_connection wait in the client, none fails with a transport error."""
    store, model = held
    limits = Limits()
    with serving(store, limits, InferencePool(workers=256, max_inflight=256), model) as (_, grpc_port):
        with grpc.insecure_channel(f'127.0.0.1:{grpc_port}') as channel:
            predict = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict
            calls = [predict.future(linear_predict_request(), timeout=120) for _ in range(200)]
            model.wait_for_calls(limits.grpc_max_streams_per_connection)
            model.release.set()
            assert outcomes(calls) == {'OK': 200}


def test_calls_beyond_max_inflight_requests_on_one_channel_are_resource_exhausted(held):
    store, model = held
    limits = Limits(max_inflight_requests=100)
    with serving(store, limits, InferencePool(workers=256, max_inflight=100), model) as (_, grpc_port):
        with grpc.insecure_channel(f'127.0.0.1:{grpc_port}') as channel:
            predict = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict
            calls = [predict.future(linear_predict_request(), timeout=120) for _ in range(1000)]
            finished = threading.Semaphore(0)
            for call in calls:
                call.add_done_callback(lambda _: finished.release())
            model.wait_for_calls(100)
            for _ in range(900):  # every call beyond the 100 the model holds is answered at once
                assert finished.acquire(timeout=60)
            model.release.set()
            assert outcomes(calls) == {'OK': 100, 'RESOURCE_EXHAUSTED': 900}


# -- connections -------------------------------------------------------------------------------
def sent_nothing_more(sock: socket.socket) -> bool:
    """Whether the server still holds `sock` open (nothing to read, no end of stream)."""
    sock.setblocking(False)
    try:
        return sock.recv(1) != b''
    except BlockingIOError:
        return True
    except ConnectionResetError:
        return False
    finally:
        sock.setblocking(True)


def closed_by_server(sock: socket.socket, seconds: float = 10) -> bool:
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except socket.timeout:
        return False
    except ConnectionResetError:
        pass
    return True


def test_max_rest_connections_closes_the_oldest_idle_connection_or_a_new_one_when_all_are_busy(held):
    store, model = held
    with serving(store, Limits(max_rest_connections=3)) as (rest_port, _):
        idle = [socket.create_connection(('127.0.0.1', rest_port)) for _ in range(3)]
        fresh = requests.Session()
        assert fresh.get(f'http://127.0.0.1:{rest_port}/v1/models/{MODEL}', timeout=10).ok  # a 4th connection
        assert closed_by_server(idle[0]) and all(sent_nothing_more(sock) for sock in idle[1:])
        for sock in idle:
            sock.close()
        fresh.close()
    with serving(store, Limits(max_rest_connections=3), held=model) as (rest_port, _):
        busy = [socket.create_connection(('127.0.0.1', rest_port)) for _ in range(3)]
        for sock in busy:
            sock.sendall(b'POST /v1/models/half_plus_two:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 19\r\n\r\n'
                         b'{"instances": [1]}\n')
        model.wait_for_calls(3)
        refused = socket.create_connection(('127.0.0.1', rest_port))
        assert closed_by_server(refused)
        model.release.set()
        answers = [sock.recv(65536) for sock in busy]
        for sock in busy + [refused]:
            sock.close()
    assert all(answer.startswith(b'HTTP/1.1 200') and b'"predictions": [2.5]' in answer for answer in answers), answers


def grpc_status_works(grpc_port: int) -> bool:
    with grpc.insecure_channel(f'127.0.0.1:{grpc_port}') as channel:
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = MODEL
        status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, timeout=10, wait_for_ready=True)
        return bool(status.model_version_status)


def test_max_grpc_connections_closes_connections_beyond_it(store):
    with serving(store, Limits(max_grpc_connections=3, grpc_handshake_timeout_seconds=60)) as (_, grpc_port):
        connections = [RawHttp2(grpc_port) for _ in range(3)]
        for connection in connections:
            connection.handshake()
        beyond = RawHttp2(grpc_port)
        assert beyond.closed_within(10)  # at once: its handshake would have a minute
        assert all(sent_nothing_more(connection.sock) for connection in connections)
        connections.pop().close()
        assert grpc_status_works(grpc_port)  # the freed place takes a fresh client
        for connection in connections + [beyond]:
            connection.close()


def test_grpc_handshake_timeout_closes_a_connection_that_never_acknowledges_settings(store):
    with serving(store, Limits(grpc_handshake_timeout_seconds=1)) as (_, grpc_port):
        connection = RawHttp2(grpc_port)  # preface and SETTINGS, never the acknowledgement
        assert connection.closed_within(10)
        connection.close()


def test_grpc_idle_timeout_closes_a_connection_with_no_call(store):
    with serving(store, Limits(grpc_idle_timeout_seconds=1)) as (_, grpc_port):
        connection = RawHttp2(grpc_port)
        connection.handshake()
        assert connection.wait_for(GOAWAY) is not None
        assert connection.closed_within(10)
        connection.close()


def test_grpc_max_connection_age_asks_a_busy_connection_to_go_away(store):
    with serving(store, Limits(grpc_max_connection_age_seconds=1)) as (_, grpc_port):
        connection = RawHttp2(grpc_port)
        connection.handshake()
        connection.open_stream(1)  # a call in progress: not idle
        assert connection.wait_for(GOAWAY) is not None
        connection.close()


def test_grpc_max_streams_per_connection_is_advertised_and_a_stream_beyond_it_refused(store):
    with serving(store, Limits(grpc_max_streams_per_connection=4)) as (_, grpc_port):
        connection = RawHttp2(grpc_port)
        assert connection.handshake()[MAX_CONCURRENT_STREAMS] == 4
        for stream in (1, 3, 5, 7, 9):  # a client that ignores the limit
            connection.open_stream(stream)
        kind, _, stream, payload = connection.wait_for(RST_STREAM)
        connection.close()
    assert (stream, int.from_bytes(payload, 'big')) == (9, REFUSED_STREAM)


# -- descriptors -------------------------------------------------------------------------------
def test_petpark_serve_raises_its_open_files_limit_to_the_hard_one():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard < 1024:
        pytest.skip(f'needs a finite hard open-files limit of 1024 or more, not {hard}')
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard // 2, hard))
    try:
        assert main.raise_open_files_limit() == hard
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_connections_are_bounded_by_what_the_open_files_limit_leaves():
    fitted = fit_connections(Limits(), open_files_limit=512, open_now=20, rest=True)
    assert (fitted.max_grpc_connections, fitted.max_rest_connections) == (118, 118)
    assert fit_connections(Limits(), 512, 20, rest=False).max_grpc_connections == 236
    assert fit_connections(Limits(), 20_000, 20, rest=True).max_grpc_connections == Limits().max_grpc_connections
    flags = fit_connections(Limits(max_rest_connections=10, max_grpc_connections=50), 512, 20, rest=True)
    assert (flags.max_grpc_connections, flags.max_rest_connections) == (50, 10)
    tiny = fit_connections(Limits(), 64, 40, rest=True)
    assert (tiny.max_grpc_connections, tiny.max_rest_connections) == (8, 8)
