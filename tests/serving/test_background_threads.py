"""No background thread of the server dies of an exception: the version poll, the config watcher,
batch threads and event loops log it (rate-limited), back off and go on."""
import argparse
import asyncio
import errno
import logging
import os
import threading
import time

import numpy as np
import pytest
from tensorflow_serving.config import model_server_config_pb2

from petpark.serving import errors, main, model_store
from petpark.serving.batching import BatchingServable
from petpark.serving.concurrency import BackgroundLoop, repeat_until_stopped
from petpark.serving.config_protos import BatchingParameters
from petpark.serving.log_limits import RateLimitedLog
from petpark.serving.metrics import ServingMetrics
from petpark.serving.model_store import ModelStore, Servable, State
from tests.serving.test_batching import Call
from tests.serving.test_model_store import FakeServable, add_version


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_repeated_errors_are_logged_once_per_interval_with_a_count(caplog):
    clock = FakeClock()
    log = RateLimitedLog(logging.getLogger('test.rate'), interval_seconds=10, clock=clock)
    with caplog.at_level(logging.ERROR, logger='test.rate'):
        for second in range(25):  # the same error every second for 25 s
            clock.now = float(second)
            log.error('accept failed: %s', 'Too many open files')
    assert [r.getMessage() for r in caplog.records] == [
        'accept failed: Too many open files',
        'accept failed: Too many open files [and 9 more like it in the last 10 s]',
        'accept failed: Too many open files [and 9 more like it in the last 10 s]']


def test_a_failing_step_is_retried_after_a_growing_pause_and_the_loop_goes_on(caplog):
    outcomes = iter([OSError(errno.EMFILE, 'Too many open files')] * 5 + [None, OSError(errno.EIO, 'I/O error'), None])
    pauses = []

    def step():
        outcome = next(outcomes)
        if outcome is not None:
            raise outcome

    def wait(seconds: float) -> bool:  # records each pause; stops once every outcome is used
        pauses.append(seconds)
        return len(pauses) > 8
    with caplog.at_level(logging.ERROR, logger='test.repeat'):
        repeat_until_stopped(step, 1.0, threading.Event(), 'polling', RateLimitedLog(logging.getLogger('test.repeat')),
                             wait=wait)
    assert pauses == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 1.0, 2.0, 1.0]
    assert caplog.records[0].getMessage() == 'polling failed (OSError: [Errno 24] Too many open files); retrying in 2.0 s'
    assert len(caplog.records) == 1  # the other failures fall within the same 10 s


def test_the_poll_thread_outlives_errors_and_loads_a_version_pushed_meanwhile(tmp_path, monkeypatch):
    add_version(tmp_path, 1)
    loaded, failures, exhausted = threading.Event(), threading.Semaphore(0), threading.Event()

    def loader(name, path, version):
        if version == 2:
            loaded.set()
        return FakeServable(version)
    listing = model_store.versions_on_disk

    def versions_on_disk(base_path, **kwargs):
        if exhausted.is_set():
            failures.release()
            raise OSError(errno.EMFILE, 'Too many open files')
        return listing(base_path, **kwargs)
    monkeypatch.setattr(model_store, 'versions_on_disk', versions_on_disk)
    config = model_server_config_pb2.ModelServerConfig()
    config.model_config_list.config.add(name='m', base_path=str(tmp_path))
    store = ModelStore(config, loader)
    store.start(poll_seconds=0.01)
    try:
        exhausted.set()
        for _ in range(3):
            assert failures.acquire(timeout=30)
        add_version(tmp_path, 2)
        assert failures.acquire(timeout=30)  # a poll failed with version 2 on disk
        exhausted.clear()
        assert loaded.wait(timeout=30)
    finally:
        store.stop()
    assert {r.version: State.Name(r.state) for r in store.status('m')} == {2: 'AVAILABLE', 1: 'END'}


def test_the_config_watcher_retries_a_change_it_could_not_apply(tmp_path):
    (tmp_path / 'models.config').write_text(f'model_config_list {{ config {{ name: "m" base_path: "{tmp_path}" }} }}')
    reloaded, attempts = threading.Event(), []

    class Store:
        def reload_config(self, config):
            attempts.append(config)
            if len(attempts) == 1:
                raise OSError(errno.EMFILE, 'Too many open files')
            reloaded.set()
    args = argparse.Namespace(model_config_file=str(tmp_path / 'models.config'), model_config_file_poll_wait_seconds=0.01)
    watcher = main.ConfigWatcher(Store(), args)
    (tmp_path / 'models.config').write_text(f'model_config_list {{ config {{ name: "n" base_path: "{tmp_path}" }} }}')
    os.utime(tmp_path / 'models.config', (time.time() + 5, time.time() + 5))
    stopped = threading.Event()
    thread = threading.Thread(target=watcher.run, args=(stopped,))
    thread.start()
    try:
        assert reloaded.wait(timeout=30)
    finally:
        stopped.set()
        thread.join(timeout=30)
    assert not thread.is_alive() and [c.model_config_list.config[0].name for c in attempts] == ['n', 'n']


def test_an_event_loop_runs_on_after_an_exception_escapes_it(caplog):
    background = BackgroundLoop('test-loop')
    original = background.loop._run_once
    broken = threading.Event()

    def run_once_broken():
        background.loop._run_once = original
        broken.set()
        raise RuntimeError('selector failed')
    with caplog.at_level(logging.ERROR, logger='petpark.serving.test-loop'):
        background.loop._run_once = run_once_broken
        background.loop.call_soon_threadsafe(lambda: None)  # wake the loop so it runs the broken iteration
        assert broken.wait(timeout=10)
        answer = asyncio.run_coroutine_threadsafe(asyncio.sleep(0, 'still running'), background.loop).result(timeout=10)
    background.close()
    assert answer == 'still running'
    assert 'the event loop raised RuntimeError: selector failed; it runs on' in caplog.text


class Doubler(Servable):
    version = 1

    def run(self, signature_name, inputs, output_filter=()):
        return {'y': inputs['x'] * 2}


def test_a_batch_thread_runs_on_after_errors_in_and_outside_a_batch(monkeypatch):
    params = BatchingParameters()
    params.num_batch_threads.value = 1
    servable = BatchingServable(Doubler(), params, ServingMetrics(), 'm')

    def run_one() -> list:  # fails, rather than hangs, if no batch thread is left to answer
        return Call(servable.run, None, {'x': np.ones([1], dtype=np.float32)}).result()['y'].tolist()

    def out_of_memory(*args, **kwargs):
        raise MemoryError('no memory')
    take, failed_once = servable._pop_batch, []

    def pop_batch_failing_once(key):  # a bug outside any batch
        if not failed_once:
            failed_once.append(key)
            raise errors.invalid_argument('bug')
        return take(key)
    try:
        with monkeypatch.context() as patch:  # stacking the batch fails: its request gets the error
            patch.setattr(np, 'concatenate', out_of_memory)
            with pytest.raises(MemoryError):
                run_one()
        assert run_one() == [2.0]
        servable._pop_batch = pop_batch_failing_once
        assert run_one() == [2.0] and failed_once
    finally:
        servable.close()
