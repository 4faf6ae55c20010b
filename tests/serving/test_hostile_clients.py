"""`petpark serve` against clients that misbehave on purpose and operators who make mistakes:
half-sent calls, idle and slow connections, connection floods and descriptor exhaustion, requests
built to cost gigabytes, malformed tensors and JSON, deleted and oddly named version folders.
Most tests run the server as its own process, so its descriptors, peak memory and log can be
measured; those that need to hold the model (an event) run it in this process."""
import base64
import io
import itertools
import json
import logging
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time

import grpc
import h2.config
import h2.connection
import numpy as np
import pytest
import requests
import tensorflow as tf
from PIL import Image
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import (get_model_status_pb2, model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

from petpark.serving.concurrency import InferencePool
from petpark.serving.limits import RESERVED_DESCRIPTORS
from petpark.serving.ports import free_port
from petpark.serving.server import RestServer
from tests.serving.model_fixtures import (IMAGE_SIZE, build_image_model, linear_predict_request, make_server,
                                          push_like_tfx, serve_held_linear_model, serve_linear_model)

MODEL = 'images'
AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE


class ServeProcess:
    """`petpark serve` on the image model, its output in a log file."""

    def __init__(self, base: str, log_path: str, *flags: str, open_files: int = 0):
        self.grpc_port, self.rest_port = free_port(), free_port()
        self.log_path = log_path
        self.url = f'http://127.0.0.1:{self.rest_port}/v1/models/{MODEL}'
        limit = (lambda: __import__('resource').setrlimit(
            __import__('resource').RLIMIT_NOFILE, (open_files, open_files))) if open_files else None
        with open(log_path, 'wb') as log:
            self.process = subprocess.Popen(
                [sys.executable, '-c', 'import sys; from petpark.pipeline.cli import main; sys.exit(main())',
                 'serve', f'--model_name={MODEL}', f'--model_base_path={base}', f'--port={self.grpc_port}',
                 f'--rest_api_port={self.rest_port}', *flags],
                stdout=log, stderr=subprocess.STDOUT, preexec_fn=limit, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if requests.get(self.url, timeout=2).ok:
                    return
            except requests.RequestException:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError('petpark serve did not start: ' + open(log_path).read()[-3000:])

    def log(self) -> str:
        with open(self.log_path, errors='replace') as f:
            return f.read()

    def wait_for_log(self, pattern: str, seconds: float = 60) -> re.Match:
        """The first match of `pattern` in the server's log, waiting for it to be written."""
        deadline = time.monotonic() + seconds
        while not (found := re.search(pattern, self.log())):
            assert time.monotonic() < deadline and self.process.poll() is None, \
                f'{pattern!r} not in the log: {self.log()[-3000:]}'
            time.sleep(0.1)
        return found

    def versions(self) -> dict:
        """{version: state} from REST status."""
        return {int(s['version']): s['state'] for s in requests.get(self.url, timeout=10).json()['model_version_status']}

    def wait_for_versions(self, expected: dict, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while (found := self.versions()) != expected:
            assert time.monotonic() < deadline, f'versions {found}, expected {expected}'
            time.sleep(0.1)

    def open_descriptors(self) -> int:
        return len(os.listdir(f'/proc/{self.process.pid}/fd'))

    def peak_rss_mb(self) -> float:
        with open(f'/proc/{self.process.pid}/status') as f:
            return next(int(line.split()[1]) for line in f if line.startswith('VmHWM')) / 1024

    def stub(self):
        channel = grpc.insecure_channel(f'127.0.0.1:{self.grpc_port}')
        return (channel, prediction_service_pb2_grpc.PredictionServiceStub(channel),
                model_service_pb2_grpc.ModelServiceStub(channel))

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


@pytest.fixture(scope='module')
def model_base(tmp_path_factory):
    base = str(tmp_path_factory.mktemp('hostile') / MODEL)
    build_image_model(os.path.join(base, '1'))
    return base


@pytest.fixture(scope='module')
def server(model_base, tmp_path_factory):
    serve = ServeProcess(model_base, str(tmp_path_factory.mktemp('logs') / 'serve.log'),
                         '--rest_idle_timeout_seconds=1', '--request_timeout_seconds=2', '--grpc_handshake_timeout_seconds=2',
                         '--max_request_bytes=1000000', '--inference_threads=2')
    yield serve
    serve.stop()


def encoded(size=(24, 24), fmt='JPEG', color=(200, 100, 50), mode='RGB') -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color if mode == 'RGB' else 0).save(buffer, format=fmt)
    return buffer.getvalue()


def status_request():
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = MODEL
    return request


def image_request(*images: bytes):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.inputs['image_bytes'].CopyFrom(tf.make_tensor_proto(list(images), dtype=tf.string))
    return request


def pixels_request(tensor: tensor_pb2.TensorProto):
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = MODEL, 'pixels'
    request.inputs['pixels'].CopyFrom(tensor)
    return request


def grpc_error(call, request):
    with pytest.raises(grpc.RpcError) as error:
        call(request, timeout=30)
    return error.value.code(), error.value.details()


def rest_predict(server, body, signature=None):
    document = dict(body, signature_name=signature) if signature else body
    return requests.post(server.url + ':predict', data=json.dumps(document), timeout=30)


# -- the server stays available -------------------------------------------------------------------
def half_sent_predict_streams(port: int, connections: int, streams: int):
    """HTTP/2 connections whose Predict calls send a 5-byte gRPC prefix announcing 1,000 bytes,
    two of them, and then nothing more."""
    opened = []
    for _ in range(connections):
        sock = socket.create_connection(('127.0.0.1', port), timeout=10)
        connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        connection.initiate_connection()
        for _ in range(streams):
            stream = connection.get_next_available_stream_id()
            connection.send_headers(stream, [
                (':method', 'POST'), (':scheme', 'http'), (':authority', f'127.0.0.1:{port}'),
                (':path', '/tensorflow.serving.PredictionService/Predict'),
                ('content-type', 'application/grpc'), ('te', 'trailers')])
            connection.send_data(stream, b'\x00' + (1000).to_bytes(4, 'big') + b'\x0a\x05')
        sock.sendall(connection.data_to_send())
        opened.append(sock)
    return opened


def test_half_sent_grpc_calls_do_not_block_other_calls(server):
    streams = half_sent_predict_streams(server.grpc_port, connections=5, streams=30)
    channel, predict, models = server.stub()
    try:
        start = time.monotonic()
        assert models.GetModelStatus(status_request(), timeout=5).model_version_status[0].state == \
            get_model_status_pb2.ModelVersionStatus.AVAILABLE
        scores = tf.make_ndarray(predict.Predict(image_request(encoded()), timeout=10).outputs['brightness'])
        assert scores.shape == (1,) and time.monotonic() - start < 10
    finally:
        channel.close()
        for sock in streams:
            sock.close()


def test_status_answers_while_every_inference_thread_is_busy(tmp_path):
    """Both inference threads hold a call the model has not answered (it waits for an event): status
    calls over REST and gRPC are answered all the same, before any of those calls ends."""
    store, model = serve_held_linear_model(str(tmp_path / 'half_plus_two'))
    pool = InferencePool(workers=2, max_inflight=256)
    rest = RestServer(store, port=0, pool=pool).start()
    grpc_server, grpc_port = make_server(store, '127.0.0.1', 0, pool=pool)
    grpc_server.start()
    try:
        with grpc.insecure_channel(f'127.0.0.1:{grpc_port}') as channel:
            busy = [prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict.future(
                linear_predict_request(), timeout=60) for _ in range(4)]
            model.wait_for_calls(2)
            request = get_model_status_pb2.GetModelStatusRequest()
            request.model_spec.name = 'half_plus_two'
            status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, timeout=10)
            reply = requests.get(f'http://127.0.0.1:{rest.port}/v1/models/half_plus_two', timeout=10)
            unfinished = [not call.done() for call in busy]
            model.release.set()
            answers = [list(call.result().outputs['y'].float_val) for call in busy]
    finally:
        model.release.set()
        rest.stop()
        grpc_server.stop(grace=None)
    assert status.model_version_status[0].state == AVAILABLE and reply.json()['model_version_status'][0]['state'] == 'AVAILABLE'
    assert all(unfinished) and model.calls == 4 and answers == [[2.5, 3.0]] * 4


def wait_closed(sock: socket.socket, seconds: float) -> bytes:
    """What the server sent before closing the connection; fails when it stays open."""
    sock.settimeout(seconds)
    received = b''
    while True:
        chunk = sock.recv(65536)  # socket.timeout if the server keeps the connection open
        if not chunk:
            return received
        received += chunk


@pytest.mark.parametrize('api,sent', [
    ('rest', b''), ('rest', b'POST /v1/models/images:predict HTTP/1.1\r\nHost: x\r\nContent-Le'),
    ('grpc', b''), ('grpc', b'PRI * HTTP/2.0\r\n\r\nSM')])
def test_idle_and_slow_connections_are_closed(server, api, sent):
    """REST: rest_idle_timeout_seconds=1; gRPC: an unfinished handshake, grpc_handshake_timeout_seconds=2."""
    sock = socket.create_connection(('127.0.0.1', server.rest_port if api == 'rest' else server.grpc_port))
    sock.sendall(sent)
    start = time.monotonic()
    wait_closed(sock, seconds=15)
    assert time.monotonic() - start < 8


def test_a_body_that_never_finishes_gets_408(server):
    sock = socket.create_connection(('127.0.0.1', server.rest_port))
    sock.sendall(b'POST /v1/models/images:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"inst')
    answer = wait_closed(sock, seconds=10)
    head, _, body = answer.partition(b'\r\n\r\n')
    assert head.startswith(b'HTTP/1.1 408') and 'request_timeout_seconds' in json.loads(body)['error']


def idle_grpc_connections(port: int, count: int) -> list:
    """Connections that send the HTTP/2 preface and SETTINGS, then nothing (not even the SETTINGS
    acknowledgement)."""
    opened = []
    for _ in range(count):
        sock = socket.create_connection(('127.0.0.1', port), timeout=10)
        connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        connection.initiate_connection()
        sock.sendall(connection.data_to_send())
        opened.append(sock)
    return opened


def test_a_connection_flood_beyond_the_open_files_limit_leaves_fresh_clients_answered(model_base, tmp_path):
    """600 idle gRPC and 600 idle REST connections against 512 descriptors: the server keeps a
    share of them (said at start), closes the rest, and a fresh client's status calls are answered."""
    serve = ServeProcess(model_base, str(tmp_path / 'serve.log'), open_files=512)
    held = []
    try:
        bounds = serve.wait_for_log(r'connections: gRPC at most (\d+), REST at most (\d+) \(open files limit 512\)')
        held += idle_grpc_connections(serve.grpc_port, 600)
        held += [socket.create_connection(('127.0.0.1', serve.rest_port), timeout=10) for _ in range(600)]
        descriptors = serve.open_descriptors()
        start = time.monotonic()
        assert requests.get(serve.url, timeout=10).json()['model_version_status'][0]['state'] == 'AVAILABLE'
        rest_seconds = time.monotonic() - start
        channel, _, models = serve.stub()
        state = models.GetModelStatus(status_request(), timeout=30, wait_for_ready=True).model_version_status[0].state
        grpc_seconds = time.monotonic() - start - rest_seconds
        channel.close()
        assert serve.process.poll() is None
    finally:
        for sock in held:
            sock.close()
        serve.stop()
    print(f'bounds {bounds.groups()}: {descriptors} descriptors open under the flood; a fresh REST status call '
          f'took {rest_seconds:.2f} s, a fresh gRPC one {grpc_seconds:.2f} s')
    assert int(bounds[1]) + int(bounds[2]) <= 512 - RESERVED_DESCRIPTORS
    assert descriptors <= 512 - 64  # headroom left for model files, logs and status calls
    assert state == AVAILABLE


def exhaust_descriptors(serve: ServeProcess):
    """Lowers the server's open-files limit to the lowest descriptor number free now, and opens REST
    connections until it accepts none (they take the numbers freed since): no descriptor can be opened
    any more. Returns the undo: the limit restored, the connections closed."""
    pid = serve.process.pid
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    in_use = {int(name) for name in os.listdir(f'/proc/{pid}/fd')}
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (next(n for n in itertools.count() if n not in in_use), hard))
    held = [socket.create_connection(('127.0.0.1', serve.rest_port), timeout=10) for _ in range(20)]

    def release() -> None:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
        for sock in held:
            sock.close()
    return release


def test_descriptor_exhaustion_is_logged_once_per_10_s_with_a_count_and_survived(model_base, tmp_path):
    serve = ServeProcess(model_base, str(tmp_path / 'serve.log'))
    held = []
    try:
        release = exhaust_descriptors(serve)
        held += [socket.create_connection(('127.0.0.1', serve.grpc_port), timeout=10) for _ in range(20)]
        accept_failed = r'socket.accept\(\) out of system resource: \[Errno 24\] Too many open files'
        serve.wait_for_log(accept_failed)  # descriptors did run out
        size = os.path.getsize(serve.log_path)
        counted = serve.wait_for_log(accept_failed + r' \[and (\d+) more like it in the last 10 s\]', seconds=30)
        grown = os.path.getsize(serve.log_path) - size
        assert len(re.findall(accept_failed, serve.log())) == 2  # once, then once 10 s later with the count
        release()
        for sock in held:
            sock.close()
        held.clear()
        assert requests.get(serve.url, timeout=10).ok
        channel, _, models = serve.stub()
        assert models.GetModelStatus(status_request(), timeout=10, wait_for_ready=True).model_version_status
        channel.close()
        assert serve.process.poll() is None
    finally:
        for sock in held:
            sock.close()
        serve.stop()
    assert int(counted[1]) >= 5 and grown < 20_000, serve.log()[-3000:]


def test_the_version_poll_outlives_descriptor_exhaustion_and_loads_a_version_pushed_meanwhile(model_base, tmp_path):
    base = str(tmp_path / MODEL)
    shutil.copytree(os.path.join(model_base, '1'), os.path.join(base, '1'))
    serve = ServeProcess(base, str(tmp_path / 'serve.log'), '--file_system_poll_wait_seconds=0.2')
    try:
        release = exhaust_descriptors(serve)
        serve.wait_for_log(r'polling the model folders failed \(RuntimeError: model images: OSError: \[Errno 24\] '
                           'Too many open files')
        push_like_tfx(os.path.join(base, '1'), os.path.join(base, '2'))
        release()
        serve.wait_for_versions({2: 'AVAILABLE', 1: 'END'})
        channel, predict, _ = serve.stub()
        assert predict.Predict(image_request(encoded()), timeout=30).model_spec.version.value == 2
        channel.close()
    finally:
        serve.stop()


def test_deleting_the_serving_version_rolls_back_to_the_previous_one(server, model_base):
    """Serve 1, push 2 (1 unloads), delete 2: 2 unloads and 1 serves again, as TF Serving does."""
    channel, predict, _ = server.stub()
    try:
        push_like_tfx(os.path.join(model_base, '1'), os.path.join(model_base, '2'))
        server.wait_for_versions({2: 'AVAILABLE', 1: 'END'})
        assert predict.Predict(image_request(encoded()), timeout=30).model_spec.version.value == 2
        shutil.rmtree(os.path.join(model_base, '2'))
        server.wait_for_versions({2: 'END', 1: 'AVAILABLE'})
        assert predict.Predict(image_request(encoded()), timeout=30).model_spec.version.value == 1
    finally:
        channel.close()
        shutil.rmtree(os.path.join(model_base, '2'), ignore_errors=True)


# -- memory per request is bounded ----------------------------------------------------------------
def test_requests_built_to_cost_gigabytes_are_refused_and_memory_stays_bounded(server):
    channel, predict, _ = server.stub()
    small = encoded()
    for _ in range(3):  # warm up every path the hostile requests take
        predict.Predict(image_request(small), timeout=30)
        assert rest_predict(server, {'instances': [{'b64': base64.b64encode(small).decode()}] * 8}).ok
        predict.Predict(pixels_request(tf.make_tensor_proto(np.zeros((8, IMAGE_SIZE, IMAGE_SIZE, 3), np.float32))),
                        timeout=30)
    before = server.peak_rss_mb()

    broadcast = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[0.5], tensor_shape=tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in (5000, 64, 64, 3)]))
    assert len(broadcast.SerializeToString()) < 100
    code, details = grpc_error(predict.Predict, pixels_request(broadcast))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and 'max_batch_size=256' in details

    huge = encoded(size=(10000, 10000), fmt='PNG', mode='L')
    assert len(huge) < 200_000
    code, details = grpc_error(predict.Predict, image_request(huge))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and 'max_image_pixels' in details and '10000 x 10000' in details
    reply = rest_predict(server, {'instances': [{'b64': base64.b64encode(huge).decode()}]})
    assert reply.status_code == 400 and 'max_image_pixels' in reply.json()['error']

    many = {'instances': [{'b64': base64.b64encode(small).decode()}] * 5000}
    reply = rest_predict(server, many)
    assert reply.status_code in (400, 413) and 'max_' in reply.json()['error']
    channel.close()
    assert server.peak_rss_mb() - before < 150, (before, server.peak_rss_mb())


def test_limits_are_flags_with_clear_errors(tmp_path, capsys):
    import argparse
    from petpark.serving import limits, main
    parser = argparse.ArgumentParser()
    main.add_flags(parser)
    args = parser.parse_args(['--max_batch_size=8', '--max_image_pixels', '1000'])
    assert limits.Limits.from_args(args) == limits.Limits(max_batch_size=8, max_image_pixels=1000)
    with pytest.raises(SystemExit):
        parser.parse_args(['--max_batch_size=0'])
    assert 'argument --max_batch_size: must be above 0, got 0' in capsys.readouterr().err


# -- errors say what went wrong, with the right code ----------------------------------------------
def test_decode_errors_return_tensorflows_reason(server):
    reply = rest_predict(server, {'instances': [{'b64': base64.b64encode(b'not an image').decode()}]})
    assert reply.status_code == 400
    assert reply.json()['error'].startswith('Unknown image file format. One of JPEG, PNG, GIF, BMP required.')
    channel, predict, _ = server.stub()
    code, details = grpc_error(predict.Predict, image_request(b'not an image'))
    channel.close()
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith('Unknown image file format')
    assert 'Graph execution error' not in details


def test_a_shape_the_signature_does_not_take_is_a_client_error(server):
    reply = rest_predict(server, {'instances': np.zeros((1, 10, 10, 3)).tolist()}, signature='pixels')
    assert reply.status_code == 400 and 'expects [-1, 16, 16, 3]' in reply.json()['error']


@pytest.mark.parametrize('path,body,status,message', [
    (':predict', '{"instances": ' + '[' * 1000 + '1.0' + ']' * 1000 + '}', 400, 'max_json_depth'),
    ('/versions/' + '9' * 5000 + ':predict', '{"instances": [1.0]}', 400, 'Failed to convert version'),
    (':predict', '{"signature_name": "slow", "instances": [' + '9' * 400 + ']}', 400, 'out of range for float'),
    (':predict', '{"signature_name": "slow", "instances": [' + '9' * 5000 + ']}', 400, 'Number too big'),
    (':predict', '{"signature_name": ' + '1' * 5000 + ', "instances": [1.0]}', 400, 'Number too big'),
    (':predict', '{"signature_name": "slow", "instances": [1e999]}', 400, 'Number too big to be stored in double: 1e999'),
])
def test_hostile_json_and_urls_are_client_errors(server, path, body, status, message):
    reply = requests.post(server.url + path, data=body, timeout=30)
    assert reply.status_code == status and message in reply.json()['error'], reply.text[:300]


def test_integers_beyond_an_input_dtype_are_client_errors():
    from tensorflow.core.protobuf import meta_graph_pb2
    from petpark.serving import errors, json_tensor
    from petpark.serving.limits import Limits
    signature = meta_graph_pb2.SignatureDef()
    signature.inputs['count'].dtype = types_pb2.DT_INT32
    with pytest.raises(errors.ServingError, match='out of range for int32'):
        json_tensor.request_to_inputs({'instances': [2 ** 40]}, signature, Limits())
    with pytest.raises(errors.ServingError, match='out of range for int64'):
        json_tensor.examples_from_json({'examples': [{'n': 10 ** 30}]}, Limits())


def test_a_5000_digit_version_in_a_status_url_is_a_client_error(server):
    reply = requests.get(server.url + '/versions/' + '1' * 5000, timeout=30)
    assert reply.status_code == 400 and reply.json()['error'].startswith('Failed to convert version')


def test_http_layer_errors_are_json(server):
    reply = requests.post(server.url + ':predict', data=b'x' * 2_000_000, timeout=30)
    assert reply.status_code == 413 and 'max_request_bytes=1000000' in reply.json()['error']
    chunked = requests.post(server.url + ':predict', data=iter([b'{"instances": ['] + [b'1.0,' * 1000] * 600),
                            timeout=30)
    assert chunked.status_code == 413 and 'max_request_bytes' in chunked.json()['error']
    reply = requests.get(server.url, headers={'X-Long': 'a' * 9000}, timeout=30)
    assert reply.status_code == 400 and reply.headers['Content-Type'].startswith('application/json')
    assert 'error' in reply.json()


def malformed(**fields):
    tensor = tensor_pb2.TensorProto(**fields)
    if 'tensor_shape' not in fields:
        tensor.tensor_shape.dim.add(size=1)
    return tensor


@pytest.mark.parametrize('tensor,message', [
    (malformed(dtype=types_pb2.DT_VARIANT), 'dtype DT_VARIANT'),
    (malformed(dtype=types_pb2.DT_INVALID), 'dtype DT_INVALID'),
    (malformed(dtype=types_pb2.DT_FLOAT, tensor_content=b'\x00' * 7), 'tensor_content has 7 bytes'),
    (malformed(dtype=types_pb2.DT_FLOAT, float_val=[1.0], tensor_shape=tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=-4)])), 'negative dimension'),
    (malformed(dtype=types_pb2.DT_FLOAT, float_val=[1.0, 2.0, 3.0]), '3 values for shape [1]'),
    (malformed(dtype=999, tensor_content=bytes(range(7, 250, 3))), 'Input x: unknown dtype 999'),
    (malformed(dtype=types_pb2.DT_DOUBLE, double_val=[1.0]), 'Input x: expects float but double is provided'),
    (tf.make_tensor_proto(np.array([1.0], dtype=tf.bfloat16.as_numpy_dtype)), 'expects float but bfloat16 is provided'),
])
def test_malformed_tensors_are_invalid_argument(server, tensor, message):
    channel, predict, _ = server.stub()
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = MODEL, 'slow'
    request.inputs['x'].CopyFrom(tensor)
    code, details = grpc_error(predict.Predict, request)
    channel.close()
    assert code == grpc.StatusCode.INVALID_ARGUMENT and message in details, details


def test_a_version_folder_beyond_int64_is_ignored_and_logged_once(tmp_path, caplog):
    """A copy at <base>/99999999999999999999 (no int64 holds it), there, deleted, back again: status
    and Predict keep answering with the real version over REST and gRPC; the name is logged once."""
    base = tmp_path / 'half_plus_two'
    store = serve_linear_model(str(base))
    rest = RestServer(store, port=0).start()
    grpc_server, grpc_port = make_server(store, '127.0.0.1', 0)
    grpc_server.start()
    channel = grpc.insecure_channel(f'127.0.0.1:{grpc_port}')
    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = 'half_plus_two'
    url = f'http://127.0.0.1:{rest.port}/v1/models/half_plus_two'

    def versions_served() -> list:
        return [[s.version for s in model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
                     status, timeout=10).model_version_status],
                prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
                    linear_predict_request(), timeout=10).model_spec.version.value,
                [s['version'] for s in requests.get(url, timeout=10).json()['model_version_status']],
                requests.post(url + ':predict', json={'instances': [2.0]}, timeout=10).json()]
    try:
        with caplog.at_level(logging.WARNING, logger='petpark.serving.models'):
            seen = []
            for change in ('copy', 'delete', 'copy'):
                if change == 'copy':
                    shutil.copytree(base / '123', base / '99999999999999999999')
                else:
                    shutil.rmtree(base / '99999999999999999999')
                store.poll()
                store.poll()
                seen.append(versions_served())
    finally:
        channel.close()
        rest.stop()
        grpc_server.stop(grace=None)
    assert seen == [[[123], 123, ['123'], {'predictions': [3.0]}]] * 3
    reported = [r.getMessage() for r in caplog.records if '99999999999999999999' in r.getMessage()]
    assert reported == [f'model half_plus_two: folder 99999999999999999999 in {base} is not an int64 version number '
                        'and is ignored, as TF Serving does']
