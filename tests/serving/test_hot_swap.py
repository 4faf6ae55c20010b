"""Hot swap under load: a new version pushed while clients send requests continuously."""
import threading
import time

import requests
from tensorflow_serving.config import model_server_config_pb2

from petpark.serving import tf_servable
from petpark.serving.model_store import ModelStore
from petpark.serving.server import RestServer
from tests.serving.model_fixtures import build_linear_model, push_like_tfx

POLL_SECONDS = 0.5


def test_new_version_answers_without_failed_requests(tmp_path):
    """No request fails during the swap, and once an answer of the new version has arrived, every
    request sent after it gets the new version (the order of answers is checked, not their timing)."""
    base = tmp_path / 'models'
    build_linear_model(str(base / '1'), slope=0.5, intercept=2.0)   # f(2) = 3
    build_linear_model(str(tmp_path / 'staged'), slope=1.0, intercept=10.0)  # f(2) = 12
    config = model_server_config_pb2.ModelServerConfig()
    config.model_config_list.config.add(name='m', base_path=str(base))
    store = ModelStore(config, tf_servable.load)
    store.start(POLL_SECONDS)
    rest = RestServer(store, port=0).start()
    url = f'http://127.0.0.1:{rest.port}/v1/models/m:predict'
    answers, failures, stop = [], [], threading.Event()  # answers: (sent, received, value)
    seen = {3.0: threading.Event(), 12.0: threading.Event()}
    answered = threading.Semaphore(0)

    def client():
        with requests.Session() as session:
            while not stop.is_set():
                sent = time.monotonic()
                reply = session.post(url, json={'instances': [2.0]}, timeout=10)
                if reply.status_code != 200:
                    failures.append(reply.text)
                    continue
                value = reply.json()['predictions'][0]
                answers.append((sent, time.monotonic(), value))
                if value in seen:
                    seen[value].set()
                answered.release()

    clients = [threading.Thread(target=client) for _ in range(4)]
    try:
        for thread in clients:
            thread.start()
        assert seen[3.0].wait(30)
        pushed_at = time.monotonic()
        push_like_tfx(str(tmp_path / 'staged'), str(base / '2'))
        assert seen[12.0].wait(30)
        for _ in range(40):  # answers to requests sent after the first new one
            assert answered.acquire(timeout=30)
    finally:
        stop.set()
        for thread in clients:
            thread.join()
        rest.stop()
        store.stop()
    assert failures == []
    assert {v for _, _, v in answers} == {3.0, 12.0}
    first_new = min(received for _, received, v in answers if v == 12.0)
    assert first_new - pushed_at < POLL_SECONDS + 10  # a bound on poll interval plus load time, not an order
    after = [v for sent, _, v in answers if sent > first_new]
    assert after and set(after) == {12.0}  # the old version no longer answers
    assert [r.version for r in store.status('m')] == [2, 1]
