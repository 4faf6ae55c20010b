"""Dynamic batching: merging, padding, limits, errors, shutdown; and through REST and gRPC."""
import argparse
import threading
import time

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import prediction_service_pb2_grpc
from tensorflow_serving.config import model_server_config_pb2

from petpark.serving import errors, main
from petpark.serving.batching import BatchingServable
from petpark.serving.config_protos import BatchingParameters
from petpark.serving.metrics import ServingMetrics
from petpark.serving.model_store import ModelStore
from petpark.serving.server import RestServer
from tests.serving.model_fixtures import build_linear_model, linear_predict_request, make_server


class RecordingModel:
    """y = 2x; records the batch sizes it is called with; can be held to let a queue fill."""
    version = 1

    def __init__(self, fail=False):
        self.sizes, self.fail, self.gate, self.entered = [], fail, threading.Event(), threading.Semaphore(0)
        self.gate.set()

    def run(self, signature_name, inputs, output_filter=()):
        self.entered.release()
        self.gate.wait()
        self.sizes.append(len(inputs['x']))
        if self.fail:
            raise errors.invalid_argument('model says no')
        return {'y': inputs['x'] * 2}


def params(**values):
    message = BatchingParameters()
    for name, value in values.items():
        if name == 'allowed_batch_sizes':
            message.allowed_batch_sizes.extend(value)
        else:
            getattr(message, name).value = value
    return message


def send_concurrently(servable, count, rows=1):
    results, threads = {}, []
    for i in range(count):
        x = np.full([rows], float(i), dtype=np.float32)
        threads.append(threading.Thread(target=lambda i=i, x=x: results.__setitem__(i, servable.run(None, {'x': x}))))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


def test_concurrent_requests_share_batches_and_get_their_own_rows():
    model = RecordingModel()
    servable = BatchingServable(model, params(max_batch_size=32, batch_timeout_micros=100_000, num_batch_threads=1),
                                ServingMetrics(), 'm')
    results = send_concurrently(servable, 24)
    servable.close()
    assert sum(model.sizes) == 24 and len(model.sizes) < 24
    for i, outputs in results.items():
        np.testing.assert_array_equal(outputs['y'], [2.0 * i])


class Call:
    """fn(*args) in a daemon thread: a request that never ends fails the test instead of hanging it."""

    def __init__(self, fn, *args):
        self._outcome = []
        self._thread = threading.Thread(target=self._run, args=(fn, args), daemon=True)
        self._thread.start()

    def _run(self, fn, args) -> None:
        try:
            self._outcome.append((True, fn(*args)))
        except Exception as e:
            self._outcome.append((False, e))

    def result(self, timeout: float = 30):
        self._thread.join(timeout)
        assert self._outcome, f'no answer within {timeout} s'
        answered, value = self._outcome[0]
        if not answered:
            raise value
        return value


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def queued(servable: BatchingServable, count: int) -> None:
    """Returns once `count` requests wait in the servable's queues (fails after 30 s)."""
    deadline = time.monotonic() + 30
    while True:
        with servable._ready:
            if sum(len(q) for q in servable._queues.values()) >= count:
                return
        assert time.monotonic() < deadline, f'fewer than {count} requests were queued'
        time.sleep(0.01)


def test_batch_timeout_counts_from_the_first_queued_request():
    """A request queued while the only batch thread runs another batch, for longer than the timeout,
    runs as soon as the thread is free. The clock is the test's and stands still after the release:
    a timeout restarted when the thread comes back would never end."""
    clock, model = FakeClock(), RecordingModel()
    model.gate.clear()
    servable = BatchingServable(model, params(max_batch_size=2, batch_timeout_micros=500_000, num_batch_threads=1),
                                ServingMetrics(), 'm', clock=clock)
    try:
        full = Call(servable.run, None, {'x': np.zeros([2], dtype=np.float32)})  # a full batch runs at once
        assert model.entered.acquire(timeout=30)  # and holds the only batch thread
        second = Call(servable.run, None, {'x': np.ones([1], dtype=np.float32)})  # queued at 0.0
        queued(servable, 1)
        clock.now = 0.6  # past its timeout while the thread is busy
        model.gate.set()
        assert full.result()['y'].tolist() == [0.0, 0.0]
        assert second.result()['y'].tolist() == [2.0]
    finally:
        model.gate.set()
        servable.close()
    assert model.sizes == [2, 1]


def test_batches_are_padded_to_allowed_sizes():
    model = RecordingModel()
    servable = BatchingServable(model, params(max_batch_size=8, batch_timeout_micros=0, allowed_batch_sizes=[2, 8]),
                                ServingMetrics(), 'm')
    outputs = servable.run(None, {'x': np.array([1.0, 2.0, 3.0], dtype=np.float32)})
    servable.close()
    assert model.sizes == [8]
    np.testing.assert_array_equal(outputs['y'], [2.0, 4.0, 6.0])


def test_limits_and_bad_parameters():
    servable = BatchingServable(RecordingModel(), params(max_batch_size=4), ServingMetrics(), 'm')
    with pytest.raises(errors.ServingError, match='Task size 5 is larger than maximum input batch size 4'):
        servable.run(None, {'x': np.zeros([5], dtype=np.float32)})
    servable.close()
    with pytest.raises(ValueError, match='allowed_batch_sizes must end with max_batch_size'):
        BatchingServable(RecordingModel(), params(max_batch_size=8, allowed_batch_sizes=[2, 4]), ServingMetrics(), 'm')


def test_full_queue_is_resource_exhausted():
    model = RecordingModel()
    model.gate.clear()  # the model is busy: nothing leaves the queue
    servable = BatchingServable(model, params(max_batch_size=1, max_enqueued_batches=2, num_batch_threads=1),
                                ServingMetrics(), 'm')
    waiting = [threading.Thread(target=servable.run, args=(None, {'x': np.zeros([1], dtype=np.float32)}))
               for _ in range(3)]  # one running, two queued
    for thread in waiting:
        thread.start()
    queued(servable, 2)
    with pytest.raises(errors.ServingError) as error:
        servable.run(None, {'x': np.zeros([1], dtype=np.float32)})
    assert error.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and error.value.http_status == 429
    model.gate.set()
    for thread in waiting:
        thread.join(timeout=10)
    servable.close()


def test_model_errors_reach_every_request_of_the_batch():
    servable = BatchingServable(RecordingModel(fail=True), params(max_batch_size=8, batch_timeout_micros=50_000),
                                ServingMetrics(), 'm')
    failures = []

    def call():
        try:
            servable.run(None, {'x': np.zeros([1], dtype=np.float32)})
        except errors.ServingError as e:
            failures.append(e.message)
    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    servable.close()
    assert failures == ['model says no'] * 4


def batching_store(tmp_path, metrics: ServingMetrics) -> ModelStore:
    """Model `m` (half_plus_two) loaded the way `petpark serve --enable_batching` loads it."""
    build_linear_model(str(tmp_path / 'm' / '1'))
    (tmp_path / 'batching.config').write_text('max_batch_size { value: 16 } batch_timeout_micros { value: 100000 }')
    args = argparse.Namespace(enable_batching=True, batching_parameters_file=str(tmp_path / 'batching.config'))
    config = model_server_config_pb2.ModelServerConfig()
    config.model_config_list.config.add(name='m', base_path=str(tmp_path / 'm'))
    store = ModelStore(config, main.make_loader(args, metrics))
    store.start(poll_seconds=0)
    return store


def batches_run(scrape: str) -> float:
    """How many batches model `m` ran, from the batch_size histogram's count."""
    return next(sample.value for family in text_string_to_metric_families(scrape)
                for sample in family.samples
                if sample.name == ':tensorflow:serving:batch_size_count' and sample.labels['model_name'] == 'm')


def test_enable_batching_through_grpc(tmp_path):
    metrics = ServingMetrics()
    store = batching_store(tmp_path, metrics)
    server, port = make_server(store, '127.0.0.1', 0, metrics)
    server.start()
    with grpc.insecure_channel(f'127.0.0.1:{port}') as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        calls = [stub.Predict.future(linear_predict_request('m', [float(i)]), timeout=30) for i in range(12)]
        answers = [tf.make_ndarray(call.result().outputs['y']).tolist() for call in calls]
    server.stop(grace=None)
    store.stop()
    assert answers == [[0.5 * i + 2.0] for i in range(12)]
    assert 1 <= batches_run(metrics.exposition().decode()) < 12


def test_enable_batching_through_rest(tmp_path):
    metrics = ServingMetrics()
    store = batching_store(tmp_path, metrics)
    rest = RestServer(store, port=0, metrics=metrics, metrics_path='/metrics').start()
    url = f'http://127.0.0.1:{rest.port}/v1/models/m:predict'
    answers = {}
    threads = [threading.Thread(target=lambda i=i: answers.__setitem__(
        i, requests.post(url, json={'instances': [float(i)]}, timeout=30).json())) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    scrape = requests.get(f'http://127.0.0.1:{rest.port}/metrics').text
    rest.stop()
    store.stop()
    assert answers == {i: {'predictions': [0.5 * i + 2.0]} for i in range(12)}
    assert ':tensorflow:serving:batch_size_count{model_name="m",signature="serving_default",version="1"} ' in scrape
    assert 1 <= batches_run(scrape) < 12
    with pytest.raises(ValueError, match='--batching_parameters_file requires --enable_batching'):
        main.make_loader(argparse.Namespace(enable_batching=False, batching_parameters_file='x'), metrics)
