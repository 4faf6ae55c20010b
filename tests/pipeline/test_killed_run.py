"""A run killed mid-way: MLMD keeps its execution RUNNING; petpark shows it as abandoned, and the
next run neither waits for it nor is confused by it. Two runs on one store at once are refused."""
import os
import signal
import subprocess
import sys
import time

import pytest

from petpark.pipeline import synthetic_data
from petpark.pipeline.inspection import store, summary
from petpark.pipeline.ops import run_lock

pytestmark = pytest.mark.e2e
BIN = os.path.dirname(sys.executable)


@pytest.fixture
def small_run(tmp_path):
    data = tmp_path / 'data'
    synthetic_data.generate(str(data), 64, seed=5)
    env = dict(os.environ, PETPARK_HOME=str(tmp_path / 'home'), PETPARK_DATA_ROOT=str(data), PETPARK_IMAGE_SIZE='32',
               PETPARK_TUNE='false', PETPARK_TRAIN_STEPS='20', PETPARK_TRAIN_EPOCHS='1', PETPARK_MIN_ACCURACY='0')
    return env, str(tmp_path / 'home' / 'metadata.sqlite')


def start_run(env):
    return subprocess.Popen([os.path.join(BIN, 'petpark'), 'run'], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def test_a_killed_run_is_abandoned_and_the_next_run_completes(small_run):
    env, metadata_path = small_run
    process = start_run(env)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if summary.latest_run(metadata_path, 'petpark').states.get('Transform') == 'RUNNING':
                break
        except (LookupError, RuntimeError, store.MetadataError):  # the run has not created its store yet
            pass
        time.sleep(0.2)
    else:
        pytest.fail('Transform never ran')
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()

    killed = summary.latest_run(metadata_path, 'petpark')
    assert killed.states['Transform'] == 'ABANDONED'
    assert 'Transform ABANDONED' in summary.describe(killed)[0]
    with run_lock.RunLock(metadata_path):  # while a run holds the store, RUNNING is what it says
        assert summary.latest_run(metadata_path, 'petpark').states['Transform'] == 'RUNNING'

    result = subprocess.run([os.path.join(BIN, 'petpark'), 'run'], env=env, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'ABANDONED' not in result.stdout and '+ Transform' in result.stdout
    again = summary.latest_run(metadata_path, 'petpark')
    assert again.run_id != killed.run_id
    assert set(again.states.values()) <= {'COMPLETE', 'CACHED'}


def test_two_runs_on_one_store_at_once_are_refused(small_run):
    env, metadata_path = small_run
    with run_lock.RunLock(metadata_path):
        result = subprocess.run([os.path.join(BIN, 'petpark'), 'run'], env=env, capture_output=True, text=True,
                                timeout=300)
    assert result.returncode == 1
    assert f'another run (pid {os.getpid()}) is using' in result.stdout
