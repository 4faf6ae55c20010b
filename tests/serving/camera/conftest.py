"""Fixtures of the camera tests: a scripted edge model folder, a loop that is always stopped, and
polling with a deadline (no sleeps to assert an order)."""
import time

import pytest

from tests.serving.camera import streams


def wait_until(predicate, timeout: float, step: float = 0.05, message: str = ''):
    """predicate()'s first true value within `timeout` seconds; fails the test otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f'not within {timeout} s: {message or predicate}')
        time.sleep(step)


@pytest.fixture
def model_dir(tmp_path):
    """An edge push folder with version 1 of the scripted model."""
    folder = tmp_path / 'edge' / 'petpark'
    folder.mkdir(parents=True)
    streams.scripted_edge_model(str(folder), 1)
    return str(folder)


@pytest.fixture
def loops():
    """Starts CameraLoops for a test and stops every one of them at its end."""
    from petpark.serving.camera.loop import CameraLoop
    started = []

    def start(*args, **kwargs) -> CameraLoop:
        loop = CameraLoop(*args, **kwargs)
        started.append(loop)
        return loop.start()
    yield start
    for loop in started:
        if not loop.stopping.is_set():
            loop.stop()
