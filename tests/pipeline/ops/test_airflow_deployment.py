"""The real one-machine deployment: PostgreSQL + LocalExecutor scheduler + webserver (`petpark airflow
up`), the DAG created and triggered with the tfx CLI, polled to success, then everything stopped by PID
(`petpark airflow down`) with nothing left running or listening."""
import os
import re
import shutil
import subprocess
import tempfile
import time

import psutil
import pytest

from petpark.pipeline import synthetic_data
from petpark.serving.ports import free_port, port_open as listening
from tests.pipeline.runners.test_airflow_dag import REPO, airflow_bin, tiny_settings

pytestmark = pytest.mark.e2e
RUN_SECONDS = 1200


def command(args, env, timeout=600):
    result = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    return result.returncode, result.stdout + result.stderr


def processes_of(root):
    """Processes started for the deployment under `root` (by command line or AIRFLOW_HOME)."""
    found = []
    for process in psutil.process_iter(['pid', 'cmdline']):
        try:
            if process.pid == os.getpid():
                continue
            if root in ' '.join(process.info['cmdline'] or []) or \
                    process.environ().get('AIRFLOW_HOME', '').startswith(root):
                found.append((process.pid, process.info['cmdline']))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


@pytest.fixture
def deployment_root():
    """A folder PostgreSQL's user can enter (as root it runs as `nobody`; pytest's tmp folders are 0700)."""
    root = tempfile.mkdtemp(prefix='petpark-airflow-')
    os.chmod(root, 0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_petpark_airflow_up_runs_a_dag_triggered_by_the_tfx_cli_and_down_stops_everything(deployment_root):
    bin_dir = airflow_bin()
    home, data = os.path.join(deployment_root, 'home'), os.path.join(deployment_root, 'data')
    synthetic_data.generate(os.path.join(data, 'span-1'), 160, seed=7)
    web_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(('PETPARK_', 'AIRFLOW'))}
    env.update(tiny_settings(home, data), PETPARK_VALIDATE_SERVING='false', PETPARK_EXPORT_ONNX='false',
               PETPARK_AIRFLOW_WEB_PORT=str(web_port), AIRFLOW_HOME=os.path.join(home, 'airflow'),
               PATH=bin_dir + os.pathsep + env['PATH'])
    petpark = os.path.join(bin_dir, 'petpark')
    try:
        code, output = command([petpark, 'airflow', 'up'], env)
        assert code == 0, output
        db_port = int(re.search(r'PostgreSQL on 127\.0\.0\.1:(\d+)', output).group(1))
        assert listening(db_port) and listening(web_port)
        pids = {name: int(open(os.path.join(home, 'airflow', 'pids', f'{name}.pid')).read())
                for name in ('postgres', 'scheduler', 'webserver')}

        code, output = command([os.path.join(bin_dir, 'tfx'), 'pipeline', 'create', '--engine', 'airflow',
                                '--pipeline_path', os.path.join(REPO, 'pipeline', 'runners', 'airflow_dag.py')], env)
        assert code == 0 and 'Pipeline "petpark" created successfully' in output, output[-3000:]
        assert os.path.isfile(os.path.join(home, 'airflow', 'dags', 'petpark', 'airflow_dag.py'))
        code, output = command([os.path.join(bin_dir, 'airflow'), 'dags', 'reserialize'], env)
        assert code == 0, output[-3000:]
        code, output = command([os.path.join(bin_dir, 'tfx'), 'run', 'create', '--engine', 'airflow',
                                '--pipeline_name', 'petpark'], env)
        assert code == 0, output[-3000:]

        deadline, status = time.monotonic() + RUN_SECONDS, ''
        while time.monotonic() < deadline:
            _, status = command([petpark, 'airflow', 'status'], env)
            if re.search(r'petpark\s+manual__\S+\s+(success|failed)', status):
                break
            time.sleep(10)
        assert re.search(r'petpark\s+manual__\S+\s+success', status), status
        assert f'postgres   running (pid {pids["postgres"]}) on 127.0.0.1:{db_port}' in status
        assert len(os.listdir(os.path.join(home, 'serving', 'petpark'))) == 1
        task_logs = os.path.join(home, 'airflow', 'logs', 'dag_id=petpark')
        assert os.path.isdir(task_logs)
    finally:
        code, output = command([petpark, 'airflow', 'down'], env)
    assert code == 0, output
    for name, pid in pids.items():
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, name
    assert not listening(db_port) and not listening(web_port)
    assert processes_of(deployment_root) == []
    code, status = command([petpark, 'airflow', 'status'], env)
    assert code == 0 and 'scheduler  stopped' in status and 'postgres   stopped' in status, status
