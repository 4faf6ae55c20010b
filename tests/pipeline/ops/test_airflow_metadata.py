"""MLMD in `petpark airflow up`'s PostgreSQL: what Deployment.environment() passes the processes and what
`status` shows (from deployment.json alone), and strings with backslashes through a real PostgreSQL."""
import json
import os
import shutil
import subprocess
import tempfile

import pytest

from petpark.pipeline.ops import airflow
from petpark.pipeline.settings import Settings

PASSWORD = 'pw-4d2f/secret'
URL = 'postgresql://mlmd:pw-4d2f%2Fsecret@127.0.0.1:5999/mlmd'


def deployment(tmp_path, **environ):
    settings = Settings.from_env({'home': str(tmp_path / 'home')}, environ=environ, check_data_root=False)
    found = airflow.Deployment(settings)
    os.makedirs(found.home)
    return found


def test_the_tasks_get_the_deployments_mlmd_and_status_never_shows_its_password(tmp_path):
    found = deployment(tmp_path)
    with open(found.state_path, 'w') as f:  # an older deployment's: no MLMD database yet
        json.dump({'db_port': 5999}, f)
    assert 'PETPARK_METADATA' not in found.environment()
    assert f'  MLMD       sqlite {tmp_path}/home/metadata.sqlite' in found.status()
    with open(found.state_path, 'w') as f:
        json.dump({'db_port': 5999, 'metadata': URL, 'mlmd_password': PASSWORD}, f)
    assert found.environment()['PETPARK_METADATA'] == URL
    assert Settings.from_env(environ=found.environment()).metadata_connection().postgresql.password == PASSWORD
    status = '\n'.join(found.status())
    assert '  MLMD       postgresql://mlmd:***@127.0.0.1:5999/mlmd (PETPARK_METADATA of the scheduler and its ' \
           f'tasks; with its password: `metadata` in {found.state_path})' in status
    assert 'pw-4d2f' not in status


def test_a_metadata_setting_where_up_runs_names_the_store_instead(tmp_path):
    mine = 'postgresql://me:other-secret@db.example:5432/shared'
    found = deployment(tmp_path, PETPARK_METADATA=mine)
    with open(found.state_path, 'w') as f:
        json.dump({'db_port': 5999, 'metadata': URL}, f)
    assert found.environment()['PETPARK_METADATA'] == mine
    status = '\n'.join(found.status())
    assert '  MLMD       postgresql://me:***@db.example:5432/shared (PETPARK_METADATA of the scheduler and its tasks)' \
        in status and 'other-secret' not in status


# A real PostgreSQL started the way `up` starts it, its `mlmd` database made by `up`'s own step; then strings
# with backslashes written through MLMD without petpark's workaround (ml-metadata's own failure) and with it.
BACKSLASHES = """
import json, sys
import ml_metadata as mlmd
from ml_metadata.proto import metadata_store_pb2
plain_call = mlmd.MetadataStore._call
from petpark.components.image_example_gen import labels
from petpark.pipeline.inspection import store
from petpark.pipeline.ops import airflow
from petpark.pipeline.settings import Settings
from petpark.serving.ports import free_port
settings = Settings.from_env({'home': sys.argv[1]}, check_data_root=False, environ={})
deployment = airflow.Deployment(settings)
deployment._secure_home()
state = {'db_port': free_port(), 'mlmd_password': 'a-password'}
values = [labels.KAGGLE_FILE_NAME_PATTERN, json.dumps({'config': json.dumps({'thresholds': [0.5]})}), 'a \\\\ b \\ue000']
try:
    deployment._start_postgres(state, print)
    deployment._create_metadata_store(state, print)
    connection = Settings.from_env({'home': sys.argv[1], 'metadata': state['metadata']}, check_data_root=False,
                                   environ={}).metadata_connection()
    found = {}
    store.handle_backslashes_on_postgresql()
    for name, call in (('without', plain_call), ('with', mlmd.MetadataStore._call)):
        mlmd.MetadataStore._call = call
        try:
            written = mlmd.MetadataStore(connection)
            type_id = written.put_execution_type(metadata_store_pb2.ExecutionType(name='probe'))
            execution = metadata_store_pb2.Execution(type_id=type_id, name=name + ' \\\\')
            for index, value in enumerate(values):
                execution.custom_properties[str(index)].string_value = value
            [execution_id] = written.put_executions([execution])
            read = mlmd.MetadataStore(connection).get_executions_by_id([execution_id])[0]
            found[name] = [read.name] + [read.custom_properties[str(i)].string_value for i in range(len(values))]
        except Exception as e:
            found[name] = f'{type(e).__name__}: {e}'
    import psycopg2
    with psycopg2.connect(state['metadata']) as db, db.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM executionproperty WHERE string_value LIKE '%%\\\\\\\\%%'")
        found['stored_with_backslash'] = cursor.fetchone()[0]
    print(json.dumps(dict(found, values=values)))
finally:
    deployment.down(print)
"""


def test_strings_with_backslashes_round_trip_through_mlmd_on_postgresql(tmp_path):
    """ml-metadata 1.16 on PostgreSQL breaks on any string with a backslash (TFX writes such strings: the
    ImageExampleGen's pattern, the Evaluator's eval_config); petpark's workaround stores them encoded."""
    bin_dir = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
        __file__))))), '.venv-airflow', 'bin')
    if not os.access(os.path.join(bin_dir, 'airflow'), os.X_OK):
        if os.environ.get('PETPARK_REQUIRE_AIRFLOW') == '1':
            pytest.fail('the Airflow environment is missing: `make airflow` creates .venv-airflow')
        pytest.skip('no Airflow environment (.venv-airflow): `make airflow` creates it')
    root = tempfile.mkdtemp(prefix='petpark-mlmd-')  # PostgreSQL's user must reach it (as root: nobody)
    os.chmod(root, 0o755)
    try:
        result = subprocess.run([os.path.join(bin_dir, 'python'), '-c', BACKSLASHES, os.path.join(root, 'home')],
                                capture_output=True, text=True, timeout=300)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    found = json.loads([line for line in result.stdout.splitlines() if line.startswith('{')][-1])
    assert found['without'].startswith('InternalError: ') and "ERROR:  syntax error at or near" in found['without'] \
        and "VALUES(" in found['without'], found  # ml-metadata's own SQL, broken
    assert found['with'] == ['with \\'] + found['values'], found
    assert found['stored_with_backslash'] == 0
