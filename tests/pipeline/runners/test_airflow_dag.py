"""The pipeline as an Airflow DAG, run by Airflow itself in the Airflow environment (.venv-airflow).

`airflow dags test` on a tiny synthetic set (SQLite), in order: the data folder vanished (the run
fails in ImageExampleGen with its own error); the push target broken, with one retry after 1 s (the
Pusher fails, the cause is fixed before Airflow retries it, the retry pushes; nothing upstream runs
again); a second span (pushed); no new span (served from the cache, nothing pushed); an anomalous
span (fails in AnomaliesGate with the anomalies named).
"""
import json
import os
import re
import shutil
import subprocess

import pytest

from petpark.pipeline import synthetic_data

pytestmark = pytest.mark.e2e
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
AIRFLOW_BIN = os.path.join(REPO, '.venv-airflow', 'bin')
TRAINING = ('ImageExampleGen', 'StatisticsGen', 'Transform', 'Trainer')


def airflow_bin():
    """.venv-airflow/bin; skips where `make airflow` has not run (`make test` requires it)."""
    if not os.access(os.path.join(AIRFLOW_BIN, 'airflow'), os.X_OK):
        if os.environ.get('PETPARK_REQUIRE_AIRFLOW') == '1':
            pytest.fail('the Airflow environment is missing: `make airflow` creates .venv-airflow')
        pytest.skip('no Airflow environment (.venv-airflow): `make airflow` creates it')
    return AIRFLOW_BIN


def tiny_settings(home, data):
    return dict(PETPARK_HOME=home, PETPARK_DATA_ROOT=data, PETPARK_INPUT_PATTERN='span-{SPAN}/*/*',
                PETPARK_TUNE='false', PETPARK_TRAIN_EPOCHS='1', PETPARK_TRAIN_STEPS='20', PETPARK_EVAL_STEPS='2',
                PETPARK_IMAGE_SIZE='32', PETPARK_MIN_ACCURACY='0', PETPARK_MAX_ACCURACY_DROP='1',
                PETPARK_AIRFLOW_RETRIES='0', PETPARK_AIRFLOW_SCHEDULE='none')


def airflow_env(airflow_home, **settings):
    env = {k: v for k, v in os.environ.items() if not k.startswith(('PETPARK_', 'AIRFLOW'))}
    env.update(settings, AIRFLOW_HOME=airflow_home, AIRFLOW__CORE__LOAD_EXAMPLES='False',
               AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT='300', PATH=airflow_bin() + os.pathsep + env['PATH'])
    return env


def run(args, env, timeout=900):
    result = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    return result.returncode, result.stdout + result.stderr


def legacy_runs(metadata_path):
    """[(run id, {component: state of its last execution}, {component: executions})] in run order, as
    TFX's Airflow launchers record them ('complete', 'cached', ...)."""
    import ml_metadata as mlmd
    from tfx.orchestration import metadata
    store = mlmd.MetadataStore(metadata.sqlite_metadata_connection_config(metadata_path))
    result = []
    for context in sorted(store.get_contexts_by_type('run'), key=lambda c: c.id):
        executions = sorted(store.get_executions_by_context(context.id), key=lambda e: e.id)
        components = [e.properties['component_id'].string_value for e in executions]
        result.append((context.properties['run_id'].string_value,
                       {c: e.properties['state'].string_value for c, e in zip(components, executions)},
                       {c: components.count(c) for c in components}))
    return result


def task_tries(airflow_home, task_id):
    """[(try number, state)] of `task_id` in the newest DAG run, from Airflow's own database."""
    import sqlite3
    with sqlite3.connect(os.path.join(airflow_home, 'airflow.db')) as db:
        rows = list(db.execute('SELECT run_id, try_number, state FROM task_instance WHERE dag_id = ? AND task_id = ?',
                               ('petpark', task_id)))
    newest = max(run_id for run_id, _, _ in rows)  # manual__<ISO time>
    return [(number, state) for run_id, number, state in rows if run_id == newest]


def logged_at(output, pattern):
    """The times of Airflow's log lines matching `pattern`, in order."""
    import datetime
    return [datetime.datetime.strptime(found.group(1), '%Y-%m-%dT%H:%M:%S.%f%z')
            for found in re.finditer(r'^\[(\S+)\] .*' + pattern, output, re.M)]


# Test only: the product's DAG file, whose tasks fix the broken push target when Airflow retries them,
# so that the cause is fixed between the failed try and the retry (the retry still waits its delay).
RETRY_DAG = '''
import os
import runpy

DAG = runpy.run_path({dag_file!r})['DAG']


def fix_the_cause(context):
    with open({calls!r}, 'a') as f:
        f.write(context['task_instance'].task_id + '\\n')
    if os.path.isfile({blocker!r}):
        os.remove({blocker!r})


for task in DAG.tasks:
    task.on_retry_callback = fix_the_cause
'''


def pushed(home):
    folder = os.path.join(home, 'serving', 'petpark')
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


@pytest.fixture(scope='module')
def dag_runs(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('airflow_dags_test'))
    home, data, airflow_home = (os.path.join(root, name) for name in ('home', 'data', 'airflow'))
    env = airflow_env(airflow_home, **tiny_settings(home, data))
    code, output = run([os.path.join(AIRFLOW_BIN, 'airflow'), 'db', 'migrate'], env)
    assert code == 0, output
    os.makedirs(os.path.join(airflow_home, 'dags'))
    shutil.copy(os.path.join(REPO, 'pipeline', 'runners', 'airflow_dag.py'), os.path.join(airflow_home, 'dags'))
    dags_test = [os.path.join(AIRFLOW_BIN, 'airflow'), 'dags', 'test', 'petpark']
    record = {'home': home, 'data': data, 'airflow_home': airflow_home}

    record['vanished'] = run(dags_test, env)  # PETPARK_DATA_ROOT does not exist (yet)

    synthetic_data.generate(os.path.join(data, 'span-1'), 160, seed=5)
    target = os.path.join(home, 'serving', 'petpark')
    os.makedirs(os.path.dirname(target))
    with open(target, 'w') as f:
        f.write('not a folder')
    retry_dags, calls = os.path.join(root, 'retry_dags'), os.path.join(root, 'retry_calls.txt')
    os.makedirs(retry_dags)
    with open(os.path.join(retry_dags, 'petpark_retrying.py'), 'w') as f:
        f.write(RETRY_DAG.format(dag_file=os.path.join(REPO, 'pipeline', 'runners', 'airflow_dag.py'), calls=calls,
                                 blocker=target))
    record['retried'] = run(dags_test + ['--subdir', retry_dags],
                            dict(env, PETPARK_AIRFLOW_RETRIES='1', PETPARK_AIRFLOW_RETRY_DELAY_S='1'))
    record['retry_calls'] = open(calls).read().split() if os.path.exists(calls) else []
    record['pusher_tries'] = task_tries(airflow_home, 'Pusher')
    record['span1_versions'] = pushed(home)

    synthetic_data.generate(os.path.join(data, 'span-2'), 160, seed=6)
    record['span2'] = run(dags_test, env)
    record['span2_versions'] = pushed(home)

    record['unchanged'] = run(dags_test, env)
    record['unchanged_versions'] = pushed(home)

    span3 = os.path.join(data, 'span-3')
    shutil.copytree(os.path.join(data, 'span-2'), span3)
    os.makedirs(os.path.join(span3, 'rabbit'))
    cat = os.path.join(span3, 'cat', sorted(os.listdir(os.path.join(span3, 'cat')))[0])
    shutil.copy(cat, os.path.join(span3, 'rabbit', 'r1.jpg'))
    record['anomalous'] = run(dags_test, env)
    record['anomalous_versions'] = pushed(home)
    record['runs'] = legacy_runs(os.path.join(home, 'metadata.sqlite'))
    return record


def failed_task(output):
    return re.findall(r'Marking task as FAILED\. dag_id=petpark, task_id=(\w+)', output)


def test_a_vanished_data_folder_fails_the_run_in_image_example_gen_with_its_error(dag_runs):
    code, output = dag_runs['vanished']
    assert code != 0, output
    assert failed_task(output) == ['ImageExampleGen'], output[-3000:]
    assert f"ImageExampleGen: the input folder {dag_runs['data']} does not exist or is not a folder" in output
    assert dag_runs['runs'][0][1].get('ImageExampleGen') != 'complete'


def test_a_failed_push_is_retried_by_airflow_after_its_delay_and_nothing_upstream_runs_again(dag_runs):
    code, output = dag_runs['retried']
    assert code == 0, output[-3000:]
    assert re.search(r'Marking task as UP_FOR_RETRY\. dag_id=petpark, task_id=Pusher', output), output[-3000:]
    assert re.search(r'Marking task as SUCCESS\. dag_id=petpark, task_id=Pusher', output)
    assert failed_task(output) == []
    assert 'serving/petpark' in output  # the first try's error names its target
    assert dag_runs['retry_calls'] == ['Pusher']  # one retry, of the Pusher alone
    assert dag_runs['pusher_tries'] == [(2, 'success')]  # Airflow's record: the second try succeeded
    import datetime
    (failed,) = logged_at(output, r'Marking task as UP_FOR_RETRY\. dag_id=petpark, task_id=Pusher')
    first_start, second_start = logged_at(output, r'\[DAG TEST\] starting task_id=Pusher ')
    assert first_start < failed and second_start - failed >= datetime.timedelta(seconds=1)  # the retry delay
    _, states, executions = dag_runs['runs'][1]
    assert all(states[node] == 'complete' and executions[node] == 1 for node in TRAINING), (states, executions)
    assert states['Pusher'] == 'complete' and executions['Pusher'] == 1  # the retry completes the try's execution
    assert len(dag_runs['span1_versions']) == 1


def test_two_spans_three_runs_push_twice(dag_runs):
    """Span 1 (pushed), span 2 (pushed), no new span (all from the cache, nothing new pushed)."""
    assert dag_runs['span2'][0] == 0, dag_runs['span2'][1][-3000:]
    assert len(dag_runs['span2_versions']) == 2 and dag_runs['span1_versions'][0] in dag_runs['span2_versions']
    _, span2, _ = dag_runs['runs'][2]
    assert span2['ImageExampleGen'] == 'complete' and span2['Trainer'] == 'complete'
    assert dag_runs['unchanged'][0] == 0, dag_runs['unchanged'][1][-3000:]
    _, unchanged, _ = dag_runs['runs'][3]
    assert all(unchanged[node] == 'cached' for node in TRAINING), unchanged
    assert dag_runs['unchanged_versions'] == dag_runs['span2_versions']


def test_an_anomalous_span_fails_the_run_in_the_anomalies_gate_and_pushes_nothing(dag_runs):
    code, output = dag_runs['anomalous']
    assert code != 0 and failed_task(output) == ['AnomaliesGate'], output[-3000:]
    assert 'rabbit' in output
    _, anomalous, _ = dag_runs['runs'][4]
    assert 'Trainer' not in anomalous and 'Pusher' not in anomalous
    assert dag_runs['anomalous_versions'] == dag_runs['span2_versions']


RETRY_DELAYS_PROBE = '''
import datetime
from airflow.models.dagrun import DagRun
from airflow.models.taskinstance import TaskInstance
now = datetime.datetime(2026, 1, 2, tzinfo=datetime.timezone.utc)
run = DagRun(dag_id=dag.dag_id, run_id="probe", execution_date=now)
delays = []
for tries in range(1, 9):
    ti = TaskInstance(dag.get_task("Pusher"), run_id="probe")
    ti.dag_run, ti.try_number, ti.end_date = run, tries, now
    delays.append((ti.next_retry_datetime() - now).total_seconds())
'''


def test_the_dag_file_builds_the_dag_from_the_settings(tmp_path):
    """Module-level DAG, schedule, no catch-up, one run and one task at a time, retries whose delay
    Airflow doubles up to one hour; parsing writes nothing."""
    home = str(tmp_path / 'home')
    env = airflow_env(str(tmp_path / 'airflow'), PETPARK_HOME=home, PETPARK_DATA_ROOT=str(tmp_path / 'absent'),
                      PETPARK_AIRFLOW_SCHEDULE='0 3 * * *', PETPARK_AIRFLOW_RETRIES='3',
                      PETPARK_AIRFLOW_RETRY_DELAY_S='60')
    probe = ('import json, runpy; dag = runpy.run_path("pipeline/runners/airflow_dag.py")["DAG"]; a = dag.default_args\n'
             + RETRY_DELAYS_PROBE +
             'print(json.dumps({"id": dag.dag_id, "schedule": str(dag.schedule_interval), "catchup": dag.catchup, '
             '"retries": a["retries"], "delay": a["retry_delay"].total_seconds(), "delays": delays, '
             '"max_active_runs": dag.max_active_runs, "max_active_tasks": dag.max_active_tasks, '
             '"start": dag.start_date.isoformat(), '
             '"tasks": {t.task_id: sorted(t.upstream_task_ids) for t in dag.tasks}}))')
    code, output = run([os.path.join(AIRFLOW_BIN, 'python'), '-c', probe], env)
    assert code == 0, output[-3000:]
    dag = json.loads([line for line in output.splitlines() if line.startswith('{"id"')][-1])
    assert dag['id'] == 'petpark' and dag['schedule'] == '0 3 * * *' and dag['catchup'] is False
    assert (dag['retries'], dag['delay']) == (3, 60.0)
    assert (dag['max_active_runs'], dag['max_active_tasks']) == (1, 1)  # MLMD's sqlite takes one writer
    # Airflow's delay before retry n: 60 s doubled n - 1 times (plus a spread below the next doubling), at most 1 h
    for tries, delay in enumerate(dag['delays'], start=1):
        assert min(60 * 2 ** (tries - 1), 3600) <= delay < min(60 * 2 ** tries, 3600.001), (tries, dag['delays'])
    assert dag['delays'][-1] == 3600
    assert dag['start'].startswith('2026-01-01')
    assert 'Transform' in dag['tasks']['Trainer'] and 'ImageExampleGen' in dag['tasks']['StatisticsGen']
    assert 'Pusher' in dag['tasks'] and 'ServingValidator' in dag['tasks']['Pusher']
    # nothing written: no wheel, no data, no metadata (TFX's sqlite config only makes the store's folder)
    assert not os.path.exists(home) or os.listdir(home) == []
