"""The server back-end: through `petpark serve` over gRPC (label stable, server-side batching, and
client batches), the scripted sequence gives the same events as the edge back-end; a server that
goes away is retried without stopping the streams, and each request names its camera."""
import subprocess
import sys
import time

import grpc
import numpy as np
import pytest

from petpark.serving.camera import config, wire
from petpark.serving.camera.backends import EdgeBackend, GrpcBackend
from petpark.serving.camera.events import EventSink
from petpark.serving.camera.sources import Frame
from petpark.serving.ports import free_port
from tests.serving.camera import streams
from tests.serving.camera.conftest import wait_until
from tests.serving.camera.test_loop import EXPECTED, SCRIPT

# The scripted model as a SavedModel: TensorFlow decodes and resizes, the band decides.
SERVE = '''
import sys
import tensorflow as tf
base, config_file, port = sys.argv[1:4]


def scores(image_bytes):
    def one(data):
        image = tf.cast(tf.io.decode_image(data, channels=3, expand_animations=False), tf.float32)
        band = tf.image.resize(image, [32, 32], antialias=True)[:7] / 255.0
        means = tf.reduce_mean(band, axis=[0, 1])
        dog = tf.sigmoid(12.0 * (means[2] - means[0]))
        return tf.stack([1.0 - dog, dog])
    found = tf.map_fn(one, image_bytes, fn_output_signature=tf.TensorSpec([2], tf.float32))
    return {'scores': found, 'classes': tf.tile(tf.constant([['cat', 'dog']]), [tf.shape(found)[0], 1])}


signature = tf.function(scores, input_signature=[tf.TensorSpec([None], tf.string, name='image_bytes')])
tf.saved_model.save(tf.Module(), base + '/1', signatures={'serving_image_bytes': signature})
from petpark.pipeline.cli import main
sys.exit(main(['serve', '--port=' + port, '--model_config_file=' + config_file, '--enable_batching',
               '--file_system_poll_wait_seconds=0', '--rest_api_port=' + sys.argv[4],
               '--monitoring_config_file=' + sys.argv[5]]))
'''


@pytest.fixture(scope='module')
def served(tmp_path_factory):
    """(HOST:PORT, edge folder, metrics URL) of `petpark serve` with the scripted SavedModel as version 1,
    labelled stable."""
    work = tmp_path_factory.mktemp('served')
    base = work / 'petpark'
    config_file = work / 'models.config'
    config_file.write_text(f'model_config_list {{ config {{ name: "petpark" base_path: "{base}" model_platform: '
                           '"tensorflow" model_version_policy { specific { versions: 1 } } '
                           'version_labels { key: "stable" value: 1 } } }')
    edge = work / 'edge'
    streams.scripted_edge_model(str(edge), 1, threshold=0.5)  # the versions' metadata.json, for thresholds
    port, rest_port = free_port(), free_port()
    monitoring = work / 'monitoring.config'
    monitoring.write_text('prometheus_config { enable: true path: "/monitoring/prometheus/metrics" }')
    log = open(work / 'serve.log', 'w')
    process = subprocess.Popen([sys.executable, '-c', SERVE, str(base), str(config_file), str(port), str(rest_port),
                                str(monitoring)], stdout=log, stderr=subprocess.STDOUT)
    target = f'127.0.0.1:{port}'
    probe = GrpcBackend(target, timeout=2.0)
    frame = Frame('probe', 0, 0.0, 0.0, rgb=streams.scene('dog'))

    def ready():
        if process.poll() is not None:
            pytest.fail(f'petpark serve exited: {(work / "serve.log").read_text()[-2000:]}')
        try:
            return probe.classify([frame])
        except Exception:
            return None
    try:
        wait_until(ready, 180, step=0.5, message='petpark serve answering')
        probe.close()
        yield target, str(edge), f'http://127.0.0.1:{rest_port}/monitoring/prometheus/metrics'
    finally:
        process.terminate()
        process.wait(30)
        log.close()


def camera_requests(url):
    """{camera: requests} from the server's :petpark:serving:camera_requests."""
    import re
    import urllib.request
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return {m.group(1): float(m.group(2)) for m in re.finditer(
        r'^:petpark:serving:camera_requests\{model_name="petpark",camera="([^"]+)"\} (\S+)$', text, re.M)}


@pytest.mark.parametrize('client_batch', [False, True])
def test_the_server_back_end_gives_the_edge_back_ends_events(tmp_path, served, loops, client_batch):
    target, edge, metrics = served
    before = camera_requests(metrics)
    video = str(tmp_path / 'park.mp4')
    streams.write_video(video, SCRIPT + [None] * 20)
    mjpeg = streams.MjpegServer(lambda i: SCRIPT[i] if i < len(SCRIPT) else None, from_connection=True).start()
    try:
        cameras = [config.camera('file', video, 'test'), config.camera('mjpeg', mjpeg.url, 'test')]
        backend = GrpcBackend(target, label='stable', client_batch=client_batch, model_dir=edge)
        loop = loops(cameras, backend, EventSink())
        wait_until(lambda: sum(e.kind == 'end' for e in loop.events) >= 4, 40, message='two presences per camera')
        for name in ('file', 'mjpeg'):
            events = [e for e in loop.events if e.camera == name]
            assert [(e.kind, e.label) for e in events[:4]] == EXPECTED, [e.record() for e in events]
            assert events[1].version == 1 and events[1].threshold == 0.5 and 16 <= events[1].frames <= 19
            assert loop.stats[name].snapshot()['counts'].get('failed', 0) == 0
        assert loop.info() == {'backend': 'server', 'model_name': 'petpark', 'version': 1, 'backend_up': True,
                               'request_log': {}}
        loop.stop()
        after = camera_requests(metrics)
        for name in ('file', 'mjpeg'):  # the server counts each camera's requests (x-petpark-camera) ...
            added = after.get(name, 0) - before.get(name, 0)
            decided = loop.stats[name].snapshot()['counts']['classified']
            assert added == (0 if client_batch else decided), (name, added, decided)  # ... unless batched by the client
    finally:
        mjpeg.stop()


def test_the_same_frames_score_alike_on_both_back_ends(served, model_dir):
    """The edge runtime (Pillow) and the server (TensorFlow) decode the JPEG a little differently: the
    scores agree within that."""
    target = served[0]
    frames = [Frame('a', i, 0.0, 0.0, rgb=streams.scene(label)) for i, label in enumerate(['cat', 'dog', None])]
    edge, server = EdgeBackend(model_dir, poll_seconds=0), GrpcBackend(target, client_batch=True)
    try:
        for a, b in zip(edge.classify(frames), server.classify(frames)):
            assert np.allclose(a.scores, b.scores, atol=0.02) and a.model.class_names == b.model.class_names
    finally:
        edge.close()
        server.close()


class FakeServer:
    """A PredictionService answering by the band, without TensorFlow (it can be killed and restarted
    in a moment); records the x-petpark-camera header of every request."""

    def __init__(self, port=0):
        self.port, self.cameras, self._server = port, [], None

    def predict(self, request: bytes, context) -> bytes:
        self.cameras.append(dict(context.invocation_metadata()).get('x-petpark-camera'))
        fields = {n: v for n, _, v in wire.fields(request)}
        entry = {n: v for n, _, v in wire.fields(fields[2])}
        images = wire.tensor_value(entry[2])
        from PIL import Image
        import io
        rows = []
        for data in images:
            band = np.asarray(Image.open(io.BytesIO(data)).convert('RGB').resize((32, 32)), np.float32)[:7] / 255.0
            means = band.mean(axis=(0, 1))
            dog = 1 / (1 + np.exp(-12 * (means[2] - means[0])))
            rows += [1 - dog, dog]
        scores = wire._int(1, wire.DT_FLOAT) + wire._field(2, wire._field(2, wire._int(1, len(images))) +
                                                            wire._field(2, wire._int(1, 2))) + \
            wire._field(5, np.asarray(rows, '<f4').tobytes())
        spec = wire._field(1, b'petpark') + wire._field(2, wire._int(1, 7))
        return wire._field(1, wire._field(1, b'scores') + wire._field(2, scores)) + wire._field(2, spec)

    def start(self) -> 'FakeServer':
        from concurrent import futures
        handler = grpc.method_handlers_generic_handler('tensorflow.serving.PredictionService', {
            'Predict': grpc.unary_unary_rpc_method_handler(self.predict)})
        self._server = grpc.server(futures.ThreadPoolExecutor(4), handlers=[handler],
                                   options=[('grpc.so_reuseport', 0)])
        self.port = self._server.add_insecure_port(f'127.0.0.1:{self.port}')
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(0).wait()


def test_a_server_that_goes_away_is_retried_and_the_streams_stay_open(model_dir, loops):
    fake = FakeServer().start()
    servers = [streams.MjpegServer(lambda i: 'dog').start() for _ in range(2)]
    try:
        cameras = [config.camera(f'cam{i}', s.url, 'test') for i, s in enumerate(servers)]
        loop = loops(cameras, GrpcBackend(f'127.0.0.1:{fake.port}', timeout=2.0), EventSink())
        stats = loop.stats
        wait_until(lambda: all(s.snapshot()['counts'].get('classified', 0) >= 5 for s in stats.values()), 30)
        assert {'cam0', 'cam1'} <= set(fake.cameras)  # one request per camera, each naming it
        assert loop.info()['version'] == 7
        fake.stop()
        wait_until(lambda: not loop.backend_up, 10, message='the server seen away')
        wait_until(lambda: all(s.snapshot()['counts'].get('failed', 0) >= 1 for s in stats.values()), 10)
        received = {name: s.snapshot()['counts']['received'] for name, s in stats.items()}
        wait_until(lambda: all(s.snapshot()['counts']['received'] > received[n] + 10 for n, s in stats.items()), 10,
                   message='the streams stay open while the server is away')
        classified = {name: s.snapshot()['counts']['classified'] for name, s in stats.items()}
        fake = FakeServer(fake.port).start()
        back = time.monotonic()
        wait_until(lambda: all(s.snapshot()['counts']['classified'] > classified[n] for n, s in stats.items()), 10,
                   message='deciding again once the server is back')
        assert time.monotonic() - back < 7 and loop.backend_up and loop._worker.is_alive()
        assert all(s.snapshot()['counts'].get('reconnects', 0) == 0 for s in stats.values())
    finally:
        fake.stop()
        for server in servers:
            server.stop()

