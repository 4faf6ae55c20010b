"""ServingValidator: a real `petpark serve` process per check, always stopped."""
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest
from tfx.components.infra_validator import types as iv_types
from tfx.components.infra_validator.model_server_clients import tensorflow_serving_client
from tfx.utils import io_utils, path_utils

from petpark.components.common import facts
from petpark.components.serving_validator import executor
from tests.components.test_serving_pusher import push, versions
from tests.pipeline_fixtures import model_with_shifted_biases, model_with_unknown_op, validate_serving

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def servers_for(path_part):
    """Live model server processes whose command line mentions `path_part`."""
    found = []
    for process in psutil.process_iter(['cmdline', 'status']):
        cmdline = ' '.join(process.info['cmdline'] or [])
        if path_part in cmdline and 'serve' in cmdline and process.info['status'] != psutil.STATUS_ZOMBIE:
            found.append(process)
    return found


def listening(process):
    return [c for c in process.connections(kind='tcp') if c.status == psutil.CONN_LISTEN]


def test_a_good_model_is_blessed_with_server_version_and_latency_and_pushed(transformed, trained_model, tmp_path):
    blessing = validate_serving(trained_model, transformed['raw_examples'], str(tmp_path))
    pushed = push(tmp_path, trained_model.uri, blessed=True, infra_blessing=blessing)
    assert pushed.get_int_custom_property('pushed') == 1 and len(versions(tmp_path)) == 1
    assert blessing.get_int_custom_property('blessed') == 1, blessing.get_string_custom_property('reason')
    assert os.path.exists(os.path.join(blessing.uri, 'INFRA_BLESSED'))
    assert blessing.get_string_custom_property('server') == 'petpark'
    assert blessing.get_string_custom_property('model_version').isdigit()
    assert 0 < blessing.get_float_custom_property('latency_p50_ms') <= blessing.get_float_custom_property('latency_p99_ms')
    assert blessing.get_float_custom_property('requests') == 8
    assert blessing.has_custom_property('max_abs_difference')  # get_float_custom_property gives 0.0 when absent
    assert blessing.get_float_custom_property('max_abs_difference') <= 1e-5
    assert not servers_for('serving_validator_')


def test_a_model_the_server_cannot_load_is_not_pushed_though_the_evaluator_blessed_it(
        transformed, trained_model, tmp_path):
    broken = model_with_unknown_op(trained_model, str(tmp_path))
    blessing = validate_serving(broken, transformed['raw_examples'], str(tmp_path), max_loading_seconds=120)
    pushed = push(tmp_path, broken.uri, blessed=True, infra_blessing=blessing)
    assert pushed.get_int_custom_property('pushed') == 0 and versions(tmp_path) == []
    assert blessing.get_int_custom_property('blessed') == 0
    assert os.path.exists(os.path.join(blessing.uri, 'INFRA_NOT_BLESSED'))
    reason = blessing.get_string_custom_property('reason')
    assert 'failed to load' in reason and 'PetparkCameraOp' in reason, reason
    assert not servers_for('serving_validator_')


class HandsTheServer:
    """The executor's io_utils, but the copy it hands the model server is `served` (a model
    server that loaded something else than the candidate)."""

    def __init__(self, served):
        self._served = served

    def copy_dir(self, source, destination):
        io_utils.copy_dir(path_utils.serving_model_path(self._served.uri), destination)

    def __getattr__(self, name):
        return getattr(io_utils, name)


def test_a_served_answer_that_differs_from_the_model_in_process_is_not_blessed_and_not_pushed(
        transformed, trained_model, tmp_path, monkeypatch):
    monkeypatch.setattr(executor, 'io_utils', HandsTheServer(model_with_shifted_biases(trained_model, str(tmp_path))))
    blessing = validate_serving(trained_model, transformed['raw_examples'], str(tmp_path))
    assert blessing.get_int_custom_property('blessed') == 0
    assert os.path.exists(os.path.join(blessing.uri, 'INFRA_NOT_BLESSED'))
    assert not os.path.exists(os.path.join(blessing.uri, 'INFRA_BLESSED'))
    reason = blessing.get_string_custom_property('reason')
    found = re.fullmatch(r'petpark: answers differ from the in-process prediction by (\S+) \(tolerance 1e-05\)', reason)
    assert found and float(found.group(1)) > 1e-3, reason
    assert facts.contributions(blessing)['serving_check']['reason'] == reason
    monkeypatch.undo()
    pushed = push(tmp_path, trained_model.uri, blessed=True, infra_blessing=blessing)
    assert pushed.get_int_custom_property('pushed') == 0 and versions(tmp_path) == []
    assert not servers_for('serving_validator_')


def test_latency_over_the_bound_is_not_blessed(transformed, trained_model, tmp_path):
    blessing = validate_serving(trained_model, transformed['raw_examples'], str(tmp_path), max_latency_ms=0.001)
    assert blessing.get_int_custom_property('blessed') == 0
    assert 'p99 latency' in blessing.get_string_custom_property('reason')


def test_a_missing_server_binary_is_a_reason_not_a_crash(transformed, trained_model, tmp_path):
    blessing = validate_serving(trained_model, transformed['raw_examples'], str(tmp_path),
                                server='tensorflow_model_server', server_binary='no-such-model-server')
    assert blessing.get_int_custom_property('blessed') == 0
    assert 'no-such-model-server is not on PATH' in blessing.get_string_custom_property('reason')


def test_an_unknown_server_is_refused_when_the_pipeline_is_built():
    from tfx.types import channel, standard_artifacts
    from petpark.components.serving_validator.component import ServingValidator
    with pytest.raises(ValueError, match="server must be one of .*'kserve'"):
        ServingValidator(model=channel.Channel(type=standard_artifacts.Model),
                         examples=channel.Channel(type=standard_artifacts.Examples), model_name='m', server='kserve')


def test_killing_the_run_leaves_no_server_and_no_port(trained_model, tmp_path):
    """The process that started a server is killed with SIGKILL once the model is AVAILABLE and
    the server is quiet (nothing it writes could fail on the closed pipe): the server dies with it."""
    script = textwrap.dedent(f'''
        import shutil, sys, time
        sys.path.insert(0, {REPO!r})
        from tfx.utils.model_paths import tf_serving_flavor
        from petpark.components.serving_validator import runners
        path = tf_serving_flavor.make_model_path({str(tmp_path)!r}, 'petpark', 1)
        shutil.copytree({os.path.join(trained_model.uri, 'Format-Serving')!r}, path)
        runner = runners.make_runner('petpark', path, 'petpark')
        runner.Start()
        runner.WaitUntilRunning(time.time() + 120)
        print(runner.GetEndpoint(), flush=True)
        time.sleep(600)
    ''')
    run = subprocess.Popen([sys.executable, '-c', script], stdout=subprocess.PIPE, text=True)
    try:
        endpoint = run.stdout.readline().strip()
        assert endpoint, 'the server never opened its port'
        port = int(endpoint.rsplit(':', 1)[1])
        client = tensorflow_serving_client.TensorFlowServingClient(endpoint, 'petpark')
        deadline = time.time() + 120
        while client._GetServingStatus() != iv_types.ModelServingStatus.READY:
            assert time.time() < deadline, 'the model never became AVAILABLE'
            time.sleep(0.2)
        server = psutil.Process(run.pid).children()[0]
        time.sleep(1)
        os.kill(run.pid, signal.SIGKILL)
        run.wait()
        gone, alive = psutil.wait_procs([server], timeout=20)
        assert not alive, 'the model server outlived the killed run'
        open_ports = {c.laddr.port for c in psutil.net_connections(kind='tcp') if c.status == psutil.CONN_LISTEN}
        assert port not in open_ports
    finally:
        if run.poll() is None:
            run.kill()
