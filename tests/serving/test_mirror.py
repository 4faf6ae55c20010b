"""Canary mirroring: petpark serve sends a share of stable's Predict requests to the canary off
the request path and logs both answers as a pair; `petpark monitor canary` judges the pairs: a canary
that changes 2% of decisions fails within 1,000 requests, an identical one passes, one that fails
requests fails."""
import base64
import os
import signal
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
from tensorflow_serving.config import model_server_config_pb2

from petpark.monitoring import canary
from petpark.serving import request_log, request_logging, tf_servable
from petpark.serving.concurrency import InferencePool
from petpark.serving.grpc_service import GrpcServer
from petpark.serving.limits import Limits
from petpark.serving.metrics import ServingMetrics
from petpark.serving.mirror import CanaryMirror
from petpark.serving.model_store import ModelStore
from petpark.serving.ports import free_port
from petpark.serving.server import RestServer
from tests.serving.model_fixtures import build_brightness_classifier, build_linear_model, grey_png

MODEL = 'petpark'
SIGNATURE = 'serving_image_bytes'
REQUESTS = 1000
FLIP_LEVELS = (128, 134)  # six grey levels of 256: 24 of 1,000 requests (2.4%) change class on the perturbed canary
TOLERANCES = canary.Tolerances(min_requests=1000, max_flip_rate=0.005, max_score_shift=0.1, max_error_ratio=0.001,
                               max_latency_increase=0.25)


def config(base, stable, canary_version):
    server_config = model_server_config_pb2.ModelServerConfig()
    model = server_config.model_config_list.config.add(name=MODEL, base_path=base, model_platform='tensorflow')
    model.model_version_policy.all.SetInParent()
    model.version_labels['stable'] = stable
    if canary_version is not None:
        model.version_labels['canary'] = canary_version
    return server_config


@pytest.fixture(scope='module')
def versions(tmp_path_factory):
    """Version 1 (stable), 2 (the same model), 3 (changes the decisions of six grey levels), 4 (takes
    another input: fails every request)."""
    base = tmp_path_factory.mktemp('mirror') / 'models'
    build_brightness_classifier(str(base / '1'))
    build_brightness_classifier(str(base / '2'))
    build_brightness_classifier(str(base / '3'), FLIP_LEVELS)
    build_linear_model(str(base / '4'))
    return str(base)


@pytest.fixture
def serving(versions, tmp_path):
    store = ModelStore(config(versions, 1, None), tf_servable.load)
    store.start(poll_seconds=0)
    prefix = tmp_path / 'logs' / MODEL
    (tmp_path / 'logging.config').write_text(f'sampling_config {{ sampling_rate: 0.0 }}\n'
                                             f'log_collector_config {{ type: "file" filename_prefix: "{prefix}" }}\n')
    logs = request_logging.ServingLog(str(tmp_path / 'logging.config'))
    logs.mirror = mirror = CanaryMirror(store, logs, 1.0, max_queued=REQUESTS)
    metrics = ServingMetrics()
    metrics.mirror_counts = mirror.snapshot
    pool = InferencePool(4, 16)
    grpc_server = GrpcServer(store, '127.0.0.1', 0, metrics, pool, Limits(), logs).start()
    rest = RestServer(store, '127.0.0.1', 0, metrics, '/metrics', pool, Limits(), logs).start()
    channel = grpc.insecure_channel(f'127.0.0.1:{grpc_server.port}')
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

    def finish():
        """Mirrors what is queued and completes the log files."""
        mirror.close()
        logs.close()

    yield {'store': store, 'stub': stub, 'rest': f'http://127.0.0.1:{rest.port}', 'folder': str(tmp_path / 'logs'),
           'versions': versions, 'finish': finish, 'mirror': mirror, 'metrics': metrics}
    channel.close()
    rest.stop()
    grpc_server.stop(0)
    pool.shutdown()
    finish()
    store.stop()


def predict(stub, level: int):
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = MODEL, SIGNATURE
    request.model_spec.version_label = 'stable'
    request.inputs['image_bytes'].CopyFrom(tf.make_tensor_proto([grey_png(level)]))
    return stub.Predict(request, timeout=30)


def traffic(stub, count=REQUESTS):
    """`count` requests of grey levels 0..255 in turn; every answer is stable's (version 1)."""
    for index in range(count):
        level = index * 97 % 256
        response = predict(stub, level)
        assert response.model_spec.version.value == 1
        assert tf.make_ndarray(response.outputs['scores'])[0][1] == pytest.approx(level / 255, abs=1e-5)


def mirrored(mirror, count, timeout=180):
    """Waits until the mirror has logged `count` pairs (it runs only on CPU the requests leave)."""
    deadline = time.monotonic() + timeout
    while mirror.snapshot().get((MODEL, 'mirrored'), 0) < count:
        assert time.monotonic() < deadline, f'{mirror.snapshot()} after {timeout} s, {count} mirrored expected'
        time.sleep(0.1)


def test_a_canary_changing_two_percent_of_decisions_fails_within_1000_requests_and_an_identical_one_passes(serving):
    flipping = sum(FLIP_LEVELS[0] <= index * 97 % 256 < FLIP_LEVELS[1] for index in range(REQUESTS))
    assert flipping / REQUESTS >= 0.02
    serving['store'].reload_config(config(serving['versions'], 1, 2))
    traffic(serving['stub'])
    mirrored(serving['mirror'], REQUESTS)  # the label moves after the queued requests are mirrored
    serving['store'].reload_config(config(serving['versions'], 1, 3))
    traffic(serving['stub'])
    mirrored(serving['mirror'], 2 * REQUESTS)
    serving['store'].reload_config(config(serving['versions'], 1, None))
    traffic(serving['stub'], 50)  # no canary: nothing mirrored
    serving['finish']()

    identical = canary.read_pairs(serving['folder'], MODEL, canary_version=2)
    assert len(identical) == REQUESTS and {p.stable_version for p in identical} == {1}
    passed = canary.judge(identical, TOLERANCES)
    assert passed['verdict'] == canary.PASS, passed
    assert passed['numbers']['flips'] == 0 and passed['numbers']['max_score_difference'] == 0
    assert passed['numbers']['canary_errors'] == 0 and passed['numbers']['stable_p50_ms'] > 0

    perturbed = canary.read_pairs(serving['folder'], MODEL, canary_version=3)
    assert len(perturbed) == REQUESTS
    failed = canary.judge(perturbed, TOLERANCES)
    assert failed['verdict'] == canary.FAIL and failed['numbers']['flips'] == flipping, failed
    assert 'decisions differ' in failed['reasons'][0]
    assert canary.judge(perturbed[:50], TOLERANCES)['verdict'] == canary.INCONCLUSIVE
    assert canary.judge(identical[:999], TOLERANCES)['verdict'] == canary.INCONCLUSIVE  # a PASS needs 1,000
    assert len(canary.read_pairs(serving['folder'], MODEL)) == 2 * REQUESTS  # the last 50 were not mirrored


def test_rest_requests_are_mirrored_as_grpc_ones_and_the_pair_carries_both_answers_and_times(serving):
    serving['store'].reload_config(config(serving['versions'], 1, 3))
    body = {'signature_name': SIGNATURE, 'instances': [{'b64': base64.b64encode(grey_png(130)).decode()}]}
    answer = requests.post(f"{serving['rest']}/v1/models/{MODEL}/labels/stable:predict", json=body,
                           headers={'x-petpark-camera': 'gate-2'}, timeout=30)
    assert answer.status_code == 200 and answer.json()['predictions'][0][1] == pytest.approx(130 / 255, abs=1e-5)
    serving['finish']()
    (pair,) = canary.read_pairs(serving['folder'], MODEL)
    assert (pair.stable_version, pair.canary_version, pair.origin) == (1, 3, 'gate-2')
    assert pair.stable_scores[0] == pytest.approx(130 / 255, abs=1e-5)
    assert pair.canary_scores[0] == pytest.approx(1 - 130 / 255, abs=1e-5)
    assert pair.stable_micros > 0 and pair.canary_micros > 0


def test_a_canary_that_fails_requests_fails_and_stable_answers_every_client(serving):
    serving['store'].reload_config(config(serving['versions'], 1, 4))
    traffic(serving['stub'], 150)
    serving['finish']()  # the queued mirrors run before it returns
    assert serving['mirror'].snapshot() == {(MODEL, 'canary_failed'): 150}
    pairs = canary.read_pairs(serving['folder'], MODEL)
    assert len(pairs) == 150 and all(p.canary_scores is None for p in pairs)
    verdict = canary.judge(pairs, TOLERANCES)
    assert verdict['verdict'] == canary.FAIL and verdict['numbers']['canary_errors'] == 150
    assert any('failed 150 of 150' in reason for reason in verdict['reasons'])


def test_the_canary_runs_in_a_process_at_the_lowest_priority_started_again_after_it_dies_or_hangs(serving):
    mirror = serving['mirror']
    serving['store'].reload_config(config(serving['versions'], 1, 2))
    traffic(serving['stub'], 20)
    mirrored(mirror, 20)
    first = mirror.process.pid
    assert first != os.getpid() and mirror.process.priority == 'SCHED_IDLE'
    threads = os.listdir(f'/proc/{first}/task')
    assert len(threads) > 2 and all(os.sched_getscheduler(int(t)) == os.SCHED_IDLE for t in threads)

    os.kill(first, signal.SIGKILL)  # dies: the next request is counted, the ones after it mirrored again
    traffic(serving['stub'], 20)
    mirrored(mirror, 39)
    second = mirror.process.pid
    assert second not in (None, first) and mirror.snapshot()[(MODEL, 'error')] == 1

    mirror.process.run_timeout = 3
    os.kill(second, signal.SIGSTOP)  # hangs: after 3 s it is killed and started again
    traffic(serving['stub'], 20)
    mirrored(mirror, 58)
    assert mirror.process.pid not in (None, first, second) and not os.path.exists(f'/proc/{second}')
    assert mirror.snapshot() == {(MODEL, 'mirrored'): 58, (MODEL, 'error'): 2}


def spawned_processes(pid: int):
    """The processes any thread of `pid` started through multiprocessing's spawn (not its resource tracker)."""
    tasks = f'/proc/{pid}/task'
    children = [child for task in os.listdir(tasks) for child in open(f'{tasks}/{task}/children').read().split()]
    return [int(child) for child in children if b'spawn_main' in open(f'/proc/{child}/cmdline', 'rb').read()]


def test_petpark_serve_mirrors_through_its_process_and_stops_it_with_itself(versions, tmp_path):
    (tmp_path / 'models.config').write_text(str(config(versions, 1, 2)))
    (tmp_path / 'logging.config').write_text('sampling_config { sampling_rate: 0.0 }\n'
                                             f'log_collector_config {{ filename_prefix: "{tmp_path / "logs" / MODEL}" }}\n')
    rest_port = free_port()
    with open(tmp_path / 'serve.log', 'w') as output:
        server = subprocess.Popen(
            [sys.executable, '-c', 'import sys; from petpark.pipeline.cli import main; sys.exit(main())', 'serve',
             f'--port={free_port()}', f'--rest_api_port={rest_port}', f"--model_config_file={tmp_path / 'models.config'}",
             f"--request_logging_config_file={tmp_path / 'logging.config'}", '--canary_mirror_rate=1.0'],
            stdout=output, stderr=subprocess.STDOUT)
    try:
        url = f'http://127.0.0.1:{rest_port}/v1/models/{MODEL}/labels/stable:predict'
        body = {'signature_name': SIGNATURE, 'instances': [{'b64': base64.b64encode(grey_png(200)).decode()}]}
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.post(url, json=body, timeout=10).ok:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline and server.poll() is None, (tmp_path / 'serve.log').read_text()
            time.sleep(0.3)
        for _ in range(29):
            assert requests.post(url, json=body, timeout=10).ok
        while not (children := spawned_processes(server.pid)):  # the mirror's starts with the first mirrored request
            assert time.monotonic() < deadline, 'no mirror process'
            time.sleep(0.1)
        (mirror_pid,) = children
        assert os.sched_getscheduler(mirror_pid) == os.SCHED_IDLE
        time.sleep(5)  # stable's 30 answers mirrored before the server is stopped
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(60) == 0
    assert not os.path.exists(f'/proc/{mirror_pid}'), 'the mirror process outlived the server'
    log = (tmp_path / 'serve.log').read_text()
    assert 'run in a separate process at the lowest CPU priority' in log and 'Traceback' not in log, log
    pairs = canary.read_pairs(str(tmp_path / 'logs'), MODEL)
    assert len(pairs) == 30 and {(p.stable_version, p.canary_version) for p in pairs} == {(1, 2)}
    assert all(p.canary_scores[0] == pytest.approx(200 / 255, abs=1e-5) for p in pairs)


def test_the_mirror_never_slows_or_fails_a_request_when_its_queue_is_full(versions, tmp_path):
    store = ModelStore(config(versions, 1, 2), tf_servable.load)
    store.start(poll_seconds=0)
    (tmp_path / 'logging.config').write_text('sampling_config { sampling_rate: 1.0 }\n'
                                             f'log_collector_config {{ filename_prefix: "{tmp_path / "logs" / MODEL}" }}\n')
    logs = request_logging.ServingLog(str(tmp_path / 'logging.config'))
    mirror = CanaryMirror(store, logs, 1.0, max_queued=1)
    mirror.close()  # no worker takes from the queue any more: one queued request fills it
    logs.mirror = mirror
    inputs = {'image_bytes': np.array([grey_png(10)], dtype=object)}
    stable_answer = {'scores': np.array([[0.9, 0.1]], np.float32)}
    assert mirror.offer(MODEL, 1, SIGNATURE, inputs, stable_answer, 5)
    request = threading.Thread(target=logs.predict, args=(MODEL, 1, SIGNATURE, inputs, stable_answer), daemon=True)
    request.start()
    request.join(10)
    assert not request.is_alive(), 'a request waited for the full mirror queue'
    assert mirror.snapshot() == {(MODEL, 'queue_full'): 1}
    logs.close()  # the request was logged as usual instead
    files = [f for f in os.listdir(tmp_path / 'logs') if f.endswith(request_log.RECORD_SUFFIX)]
    assert len(files) == 1
    store.stop()


def test_mirroring_needs_request_logging_and_a_rate_between_0_and_1(versions):
    store = ModelStore(config(versions, 1, 2), tf_servable.load)
    with pytest.raises(ValueError, match='--request_logging_config_file'):
        CanaryMirror(store, request_logging.ServingLog(None), 0.5)
    with pytest.raises(ValueError, match='between 0 and 1'):
        CanaryMirror(store, request_logging.ServingLog(None), 1.5)
    assert CanaryMirror(store, request_logging.ServingLog(None), 0.0).describe() == 'canary mirroring off'


def test_the_inference_time_rides_in_a_field_tensorflow_serving_keeps_as_unknown():
    from tensorflow_serving.apis import prediction_log_pb2
    data = request_log.image_prediction_log(MODEL, 1, [b'x'], [[0.2, 0.8]], 7)
    spec = request_log.model_spec(MODEL, 1, SIGNATURE)
    timed = request_log.prediction_log('predict', request_log.predict_request(spec, {}), b'', spec, 1.0, 7, 'cam',
                                       inference_micros=1234)
    parsed = prediction_log_pb2.PredictionLog.FromString(timed)
    assert parsed.log_metadata.request_origin == 'cam' and parsed.log_metadata.model_spec.version.value == 1
    assert request_log.varint_field(parsed.log_metadata.SerializeToString(), request_log.INFERENCE_MICROS_FIELD) == 1234
    plain = prediction_log_pb2.PredictionLog.FromString(data)
    assert request_log.varint_field(plain.log_metadata.SerializeToString(), request_log.INFERENCE_MICROS_FIELD) is None
    with pytest.raises(ValueError, match='truncated'):
        request_log.varint_field(b'\x08', 1)
