"""The monitoring DAG (pipeline/runners/monitor_dag.py), parsed and run by Airflow in .venv-airflow.

Parsing builds the DAG from the settings (id, schedule and its intervals, retries) and writes and
imports nothing heavy; `none` builds no DAG. Each task runs `petpark monitor` over the run's data
interval as a process of its own; Airflow's own task states: PASS and INCONCLUSIVE succeed, a BREACH
fails at once without a retry, an error is retried.
"""
import ast
import json
import os
import subprocess

import pytest

pytestmark = pytest.mark.e2e
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
AIRFLOW_BIN = os.path.join(REPO, '.venv-airflow', 'bin')
DAG_FILE = os.path.join(REPO, 'pipeline', 'runners', 'monitor_dag.py')


def airflow_python():
    """.venv-airflow's Python; skips where `make airflow` has not run (`make test` requires it)."""
    if not os.access(os.path.join(AIRFLOW_BIN, 'airflow'), os.X_OK):
        if os.environ.get('PETPARK_REQUIRE_AIRFLOW') == '1':
            pytest.fail('the Airflow environment is missing: `make airflow` creates .venv-airflow')
        pytest.skip('no Airflow environment (.venv-airflow): `make airflow` creates it')
    return os.path.join(AIRFLOW_BIN, 'python')


def probe(tmp_path, code, *args, **settings):
    """The last JSON object (or null) `code` prints, run by .venv-airflow's Python (with `args`) with only these PETPARK_*
    settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(('PETPARK_', 'AIRFLOW'))}
    env.update(settings, PETPARK_HOME=str(tmp_path / 'home'), AIRFLOW_HOME=str(tmp_path / 'airflow'),
               AIRFLOW__CORE__LOAD_EXAMPLES='False', PATH=AIRFLOW_BIN + os.pathsep + env['PATH'])
    result = subprocess.run([airflow_python(), '-c', code, *args], env=env, cwd=REPO, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return json.loads([line for line in result.stdout.splitlines() if line.startswith('{') or line == 'null'][-1])


PARSE = '''
import json, runpy, sys, time
import pendulum
started = time.monotonic()
dag = runpy.run_path(%r)["DAG"]
seconds = time.monotonic() - started
interval = dag and dag.timetable.infer_manual_data_interval(run_after=pendulum.datetime(2026, 3, 1, 10, 7, tz="UTC"))
print(json.dumps(dag and {
    "id": dag.dag_id, "schedule": str(dag.schedule_interval), "catchup": dag.catchup,
    "max_active_runs": dag.max_active_runs, "tasks": [t.task_id for t in dag.tasks],
    "retries": dag.default_args["retries"], "delay": dag.default_args["retry_delay"].total_seconds(),
    "interval": [interval.start.isoformat(), interval.end.isoformat()], "start": dag.start_date.isoformat(),
    "paused_at_creation": dag.is_paused_upon_creation, "seconds": seconds,
    "heavy": sorted(m for m in ("tensorflow", "tfx", "tensorflow_data_validation", "pandas") if m in sys.modules)}))
''' % DAG_FILE


def test_the_dag_is_built_from_the_settings_and_parsing_writes_nothing(tmp_path):
    dag = probe(tmp_path, PARSE, PETPARK_PIPELINE_NAME='park', PETPARK_MONITOR_SCHEDULE='*/5 * * * *',
                PETPARK_AIRFLOW_RETRIES='4', PETPARK_AIRFLOW_RETRY_DELAY_S='30', PETPARK_AIRFLOW_START_DATE='2026-02-01')
    assert dag['id'] == 'park_monitor' and dag['tasks'] == ['monitor']
    assert dag['schedule'] == '*/5 * * * *' and dag['catchup'] is False and dag['max_active_runs'] == 1
    assert dag['interval'] == ['2026-03-01T10:00:00+00:00', '2026-03-01T10:05:00+00:00']  # the last whole interval
    assert (dag['retries'], dag['delay']) == (4, 30.0) and dag['start'].startswith('2026-02-01')
    assert dag['heavy'] == [] and dag['seconds'] < 30, dag
    assert not (tmp_path / 'home').exists()
    default = probe(tmp_path, PARSE)
    assert (default['id'], default['schedule']) == ('petpark_monitor', '*/15 * * * *')
    assert default['interval'] == ['2026-03-01T09:45:00+00:00', '2026-03-01T10:00:00+00:00']
    assert probe(tmp_path, PARSE, PETPARK_MONITOR_SCHEDULE='none') is None


def test_its_verdicts_are_the_monitors_exit_statuses():
    from petpark.monitoring import monitor
    tree = ast.parse(open(DAG_FILE).read())
    verdicts = next(ast.literal_eval(node.value) for node in tree.body
                    if isinstance(node, ast.Assign) and getattr(node.targets[0], 'id', '') == 'VERDICTS')
    assert verdicts == {code: verdict for verdict, code in monitor.EXIT_CODES.items()}
    # the line the DAG tells a breach by (exit 1 is also a crash's) is the one run_window logs
    assert "log(f'{settings.model_name} version {version}, window {window_id}: {checked.verdict}')" \
        in open(monitor.__file__).read()


# Runs the monitoring task through Airflow (TaskInstance.run, Airflow's own failure handling) with
# `petpark monitor` replaced by a process that records its arguments and exits with a given status;
# then once with the real `petpark monitor` on an empty home.
TASK_STATES = '''
import datetime, json, sys
from airflow.utils import db
from airflow.utils.state import DagRunState
from airflow.utils.types import DagRunType
import petpark.pipeline.runners.monitor_dag as monitor_dag
db.initdb()
dag = monitor_dag.DAG
dag.sync_to_db()
calls, states = sys.argv[1], {}
real_command = monitor_dag.monitor_command
verdict_lines = {"breach": "petpark version 1, window 20260301T100000-20260301T101500-60: BREACH",
                 "crash": "Traceback (most recent call last): ..."}
for name, status in (("pass", 0), ("breach", 1), ("crash", 1), ("error", 2), ("inconclusive", 3), ("real", None)):
    if status is not None:
        monitor_dag.monitor_command = lambda since, until, status=status, line=verdict_lines.get(name, ""): [
            sys.executable, "-c", f"open({calls!r}, 'a').write('{since} {until}\\\\n'); print({line!r}); "
                                  f"raise SystemExit({status})"]
    else:
        monitor_dag.monitor_command = real_command
    start = datetime.datetime(2026, 3, 1, 10, 0, tzinfo=datetime.timezone.utc) + datetime.timedelta(hours=len(states))
    run = dag.create_dagrun(run_id=name, state=DagRunState.RUNNING, execution_date=start, run_type=DagRunType.MANUAL,
                            data_interval=(start, start + datetime.timedelta(minutes=15)))
    ti = run.get_task_instance("monitor")
    ti.task = dag.get_task("monitor")
    error = ""
    try:
        ti.run(ignore_all_deps=True)
    except Exception as e:
        error = f"{type(e).__name__}: {e}"
    states[name] = [str(ti.state), ti.xcom_pull(task_ids="monitor"), error, int(start.timestamp())]
print(json.dumps(states))
'''


def test_a_breach_fails_at_once_an_error_is_retried_and_a_run_reaches_petpark_monitor(tmp_path):
    calls = tmp_path / 'calls.txt'
    states = probe(tmp_path, TASK_STATES, str(calls), PETPARK_AIRFLOW_RETRIES='2')
    assert states['pass'][:3] == ['success', 'PASS', '']
    assert states['inconclusive'][:3] == ['success', 'INCONCLUSIVE', '']
    assert states['breach'][0] == 'failed' and states['breach'][2].startswith('AirflowFailException: petpark monitor: BREACH')
    assert states['error'][0] == 'up_for_retry' and 'petpark monitor failed (exit 2)' in states['error'][2]
    # Python's exit status of an uncaught exception is a breach's too: without the verdict line, an error
    assert states['crash'][0] == 'up_for_retry' and 'failed (exit 1): Traceback' in states['crash'][2]
    starts = [states[name][3] for name in ('pass', 'breach', 'crash', 'error', 'inconclusive')]
    assert open(calls).read().split('\n')[:-1] == [f'{start} {start + 900}' for start in starts]  # the data intervals
    # the real command line: `petpark monitor` runs, and says this home has nothing to monitor
    real_state, _, real_error, _ = states['real']
    assert real_state == 'up_for_retry' and 'petpark monitor failed (exit 2): petpark: error: No metadata store at ' \
        f"{tmp_path / 'home' / 'metadata.sqlite'}" in real_error, states['real']
