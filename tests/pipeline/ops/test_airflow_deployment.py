"""The real one-machine deployment: PostgreSQL + LocalExecutor scheduler + webserver (`petpark airflow
up`), the DAG created and triggered with the tfx CLI, polled to success, then everything stopped by PID
(`petpark airflow down`) with nothing left running or listening. MLMD is in the same PostgreSQL
(database `mlmd`): the run's tasks wrote there, some side by side, and `petpark models` reads it; the
monitoring DAG `up` installed runs `petpark monitor`, which records its window there too. Its secrets
stay private: password logins only, secret files 0600 in a folder others cannot list or enter, no
password in any process's command line, nor in any environment but MLMD's (PETPARK_METADATA)."""
import json
import os
import pwd
import re
import shutil
import stat
import subprocess
import tempfile
import time

import psutil
import pytest

from petpark.pipeline import synthetic_data
from petpark.serving.ports import free_port, port_open as listening
from tests.pipeline.runners.test_airflow_dag import tiny_settings

pytestmark = pytest.mark.e2e
RUN_SECONDS = 1200
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
AIRFLOW_BIN = os.path.join(REPO, '.venv-airflow', 'bin')


def airflow_bin():
    """.venv-airflow/bin; skips where `make airflow` has not run (`make test` requires it)."""
    if not os.access(os.path.join(AIRFLOW_BIN, 'airflow'), os.X_OK):
        if os.environ.get('PETPARK_REQUIRE_AIRFLOW') == '1':
            pytest.fail('the Airflow environment is missing: `make airflow` creates .venv-airflow')
        pytest.skip('no Airflow environment (.venv-airflow): `make airflow` creates it')
    return AIRFLOW_BIN


def command(args, env, timeout=600):
    result = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    return result.returncode, result.stdout + result.stderr


class CommandLines:
    """Every process's command line and environment seen on the machine, sampled by `sample()`."""

    def __init__(self):
        self.seen = {}

    def sample(self):
        for process in psutil.process_iter(['cmdline']):
            try:
                line = tuple(process.info['cmdline'] or ())
                if line and line not in self.seen:
                    self.seen[line] = '\n'.join(process.environ().values())
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                pass

    def holding(self, secret):
        return [line for line, environ in self.seen.items() if secret in ' '.join(line) or secret in environ]


def up_sampling(petpark, env, command_lines):
    """`petpark airflow up`, sampling the machine's command lines every 0.25 s while it runs (`airflow users
    create` alone runs for seconds)."""
    with tempfile.TemporaryFile('w+') as output:
        process = subprocess.Popen([petpark, 'airflow', 'up'], env=env, cwd=REPO, stdout=output,
                                   stderr=subprocess.STDOUT, text=True)
        while process.poll() is None:
            command_lines.sample()
            time.sleep(0.25)
        output.seek(0)
        return process.returncode, output.read()


# Tries three logins to the deployment's database (the right password comes on stdin): no password,
# a wrong one, the right one; prints what each got.
LOGINS = """
import json, sys, psycopg2
results = []
for password in (None, 'wrong-password', sys.stdin.read().strip()):
    try:
        psycopg2.connect(host='127.0.0.1', port=int(sys.argv[1]), user='airflow', password=password,
                         dbname='airflow', connect_timeout=10).close()
        results.append('logged in')
    except psycopg2.OperationalError as e:
        results.append(str(e).strip().splitlines()[-1])
print(json.dumps(results))
"""


def logins(bin_dir, port, password):
    result = subprocess.run([os.path.join(bin_dir, 'python'), '-c', LOGINS, str(port)], input=password,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def as_postgres_user(*args):
    """(exit code, output) of a command run as `nobody`, the user PostgreSQL runs as under root."""
    nobody = pwd.getpwnam('nobody')
    result = subprocess.run(args, user=nobody.pw_uid, group=nobody.pw_gid, extra_groups=[], capture_output=True,
                            text=True, timeout=60)
    return result.returncode, result.stdout + result.stderr


def check_secrets_are_private(bin_dir, airflow_home, db_port, command_lines):
    """Password logins only, 0600 secret files in a folder others cannot list or enter, no password
    in any command line or environment sampled during `up`."""
    state = json.load(open(os.path.join(airflow_home, 'deployment.json')))
    hba = os.path.join(airflow_home, 'postgres', 'data', 'pg_hba.conf')
    rules = [line.split() for line in open(hba) if line.strip() and not line.lstrip().startswith('#')]
    assert rules and all(rule[-1] == 'scram-sha-256' for rule in rules), rules
    no_password, wrong_password, right_password = logins(bin_dir, db_port, state['db_password'])
    assert 'no password supplied' in no_password
    assert 'password authentication failed for user "airflow"' in wrong_password
    assert right_password == 'logged in'

    for name in ('deployment.json', 'airflow.cfg'):
        assert stat.S_IMODE(os.stat(os.path.join(airflow_home, name)).st_mode) == 0o600, name
    assert f"airflow:{state['db_password']}@127.0.0.1" in open(os.path.join(airflow_home, 'airflow.cfg')).read()
    folder = os.stat(airflow_home)
    if os.geteuid() != 0:
        assert stat.S_IMODE(folder.st_mode) == 0o700
    else:  # PostgreSQL runs as nobody, whose group may only pass through to postgres/
        assert (stat.S_IMODE(folder.st_mode), folder.st_gid) == (0o710, pwd.getpwnam('nobody').pw_gid)
        for command in (['ls', airflow_home], ['cat', os.path.join(airflow_home, 'airflow.cfg')],
                        ['cat', os.path.join(airflow_home, 'deployment.json')]):
            code, output = as_postgres_user(*command)
            assert code != 0 and 'Permission denied' in output, (command, output)
        assert as_postgres_user('ls', os.path.join(airflow_home, 'postgres', 'data'))[0] == 0

    assert any('users' in line and 'create' in line for line in command_lines.seen), 'the sampling missed it'
    for secret in (state['admin_password'], state['db_password'], state['secret_key']):
        assert command_lines.holding(secret) == []
    assert [line for line in command_lines.seen if state['mlmd_password'] in ' '.join(line)] == []


# What the run left in PostgreSQL: MLMD's tables and records in `mlmd` (logged in as MLMD's role, with the
# URL from deployment.json on stdin), and from Airflow's database the times of the training run's tasks.
RECORDS = """
import json, sys, psycopg2
state = json.loads(sys.stdin.read())
with psycopg2.connect(state['metadata'], connect_timeout=10) as mlmd, mlmd.cursor() as cursor:
    cursor.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
    tables = sorted(row[0] for row in cursor.fetchall())
    cursor.execute("SELECT t.name, count(*) FROM execution e JOIN type t ON e.type_id = t.id GROUP BY t.name")
    executions = dict(cursor.fetchall())
with psycopg2.connect(host='127.0.0.1', port=state['db_port'], user='airflow', password=state['db_password'],
                      dbname='airflow', connect_timeout=10) as airflow, airflow.cursor() as cursor:
    # a task holds an executor slot from the moment the scheduler queues it (only into a free slot)
    # to its end; its start_date comes after the task process has imported the DAG file, seconds
    # later and by a varying amount, so sub-second tasks started side by side rarely overlap there
    cursor.execute("SELECT extract(epoch FROM coalesce(queued_dttm, start_date)), extract(epoch FROM end_date) "
                   "FROM task_instance WHERE dag_id = 'petpark' AND start_date IS NOT NULL")
    tasks = [[float(start), float(end)] for start, end in cursor.fetchall()]
print(json.dumps({'tables': tables, 'executions': executions, 'tasks': tasks}))
"""


def records(bin_dir, airflow_home):
    state = open(os.path.join(airflow_home, 'deployment.json')).read()
    result = subprocess.run([os.path.join(bin_dir, 'python'), '-c', RECORDS], input=state, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def most_at_once(intervals):
    """The most intervals [start, end] that overlap at one moment."""
    moments = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = most = 0
    for _, change in moments:
        running += change
        most = max(most, running)
    return most


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
    command_lines = CommandLines()
    try:
        code, output = up_sampling(petpark, env, command_lines)
        assert code == 0, output
        db_port = int(re.search(r'PostgreSQL on 127\.0\.0\.1:(\d+)', output).group(1))
        assert listening(db_port) and listening(web_port)
        check_secrets_are_private(bin_dir, os.path.join(home, 'airflow'), db_port, command_lines)
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
            command_lines.sample()
            _, status = command([petpark, 'airflow', 'status'], env)
            if re.search(r'petpark\s+manual__\S+\s+(success|failed)', status):
                break
            time.sleep(10)
        assert re.search(r'petpark\s+manual__\S+\s+success', status), status
        assert command_lines.holding(json.load(open(os.path.join(home, 'airflow', 'deployment.json')))['admin_password']) \
            == []  # nor while the DAG ran
        assert f'postgres   running (pid {pids["postgres"]}) on 127.0.0.1:{db_port}' in status
        pushed = os.listdir(os.path.join(home, 'serving', 'petpark'))
        assert len(pushed) == 1
        task_logs = os.path.join(home, 'airflow', 'logs', 'dag_id=petpark')
        assert os.path.isdir(task_logs)

        # MLMD is in PostgreSQL: the tasks wrote there (no sqlite file), some side by side; `petpark models` reads it
        state = json.load(open(os.path.join(home, 'airflow', 'deployment.json')))
        assert f'  MLMD       postgresql://mlmd:***@127.0.0.1:{db_port}/mlmd (' in status
        assert state['mlmd_password'] not in status
        found = records(bin_dir, os.path.join(home, 'airflow'))
        assert {'artifact', 'context', 'event', 'execution', 'type'} <= set(found['tables']), found['tables']
        assert [count for name, count in found['executions'].items() if name.endswith('Pusher')] == [1], found
        assert not os.path.exists(os.path.join(home, 'metadata.sqlite'))
        print(f"training tasks holding an executor slot at once: at most {most_at_once(found['tasks'])}")
        assert most_at_once(found['tasks']) <= 2, found['tasks']
        # Whether two ready tasks overlap depends on the scheduler's loop timing; what PostgreSQL allows
        # (sqlite: SequentialExecutor, one task at a time) is the executor the deployment runs with
        for key, wanted in (('executor', 'LocalExecutor'), ('parallelism', '2')):
            code, output = command([os.path.join(bin_dir, 'airflow'), 'config', 'get-value', 'core', key], env)
            assert code == 0 and output.strip().splitlines()[-1] == wanted, (key, output[-3000:])
        code, output = command([petpark, 'models', 'list', '--json'], dict(env, PETPARK_METADATA=state['metadata']))
        assert code == 0 and [model['version'] for model in json.loads(output)] == pushed, output[-3000:]
        code, output = command([petpark, 'models', 'list'], env)  # without the setting: the (absent) sqlite file
        assert code == 2 and f"No metadata store at {os.path.join(home, 'metadata.sqlite')}" in output, output

        # the monitoring DAG, installed by `up`, paused until unpaused: one run reaches `petpark monitor`
        code, output = command([os.path.join(bin_dir, 'airflow'), 'dags', 'list', '-o', 'plain'], env)
        assert code == 0 and re.search(r'^petpark_monitor\s', output, re.M), output[-3000:]
        os.makedirs(os.path.join(home, 'request_logs'))  # no frames served: the window is INCONCLUSIVE
        code, output = command([os.path.join(bin_dir, 'airflow'), 'dags', 'unpause', 'petpark_monitor'], env)
        assert code == 0, output
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            _, status = command([petpark, 'airflow', 'status'], env)
            if re.search(r'petpark_monitor\s+scheduled__\S+\s+(success|failed)', status):
                break
            time.sleep(5)
        assert re.search(r'petpark_monitor\s+scheduled__\S+\s+success', status), status
        monitor_logs = [os.path.join(folder, name) for folder, _, names in
                        os.walk(os.path.join(home, 'airflow', 'logs', 'dag_id=petpark_monitor')) for name in names]
        log_text = ''.join(open(path).read() for path in monitor_logs)
        assert re.search(r'petpark\.pipeline\.cli monitor --since \d+ --until \d+', log_text), log_text[-3000:]
        assert re.search(r'petpark version \d+, window \S+-0: INCONCLUSIVE', log_text), log_text[-3000:]
        assert records(bin_dir, os.path.join(home, 'airflow'))['executions'].get('petpark.MonitorWindow') == 1
    finally:
        code, output = command([petpark, 'airflow', 'down'], env)
    assert code == 0, output
    for name, pid in pids.items():
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, name
    assert not listening(db_port) and not listening(web_port)
    assert processes_of(deployment_root) == []
    code, status = command([petpark, 'airflow', 'status'], env)
    assert code == 0 and 'scheduler  stopped' in status and 'postgres   stopped' in status, status


# Starts PostgreSQL the way an older petpark left it (initialised with trust logins, no password
# in deployment.json), then `up`'s PostgreSQL step; prints the logins and pg_hba.conf's rules.
OLDER_CLUSTER = """
import json, os, sys
from petpark.pipeline.ops import airflow
from petpark.pipeline.settings import Settings
from petpark.serving.ports import free_port
deployment = airflow.Deployment(Settings.from_env({'home': sys.argv[1]}, check_data_root=False, environ={}))
deployment._secure_home()
os.makedirs(deployment._path('postgres'))
tools = airflow.postgres_bin(deployment.settings)
if deployment._postgres_user():
    os.chown(deployment._path('postgres'), deployment._postgres_user().pw_uid, -1)
deployment._run_postgres_tool([os.path.join(tools, 'initdb'), '-D', deployment.pg_data, '-U', 'airflow',
                               '--auth=trust', '--no-instructions'], 'initdb')
state = {'db_port': free_port()}
try:
    deployment._start_postgres(state, print)
    import psycopg2
    results = []
    for password in (None, state['db_password']):
        try:
            psycopg2.connect(host='127.0.0.1', port=state['db_port'], user='airflow', password=password,
                             dbname='airflow', connect_timeout=10).close()
            results.append('logged in')
        except psycopg2.OperationalError as e:
            results.append(str(e).strip().splitlines()[-1])
    rules = [line.split()[-1] for line in open(os.path.join(deployment.pg_data, 'pg_hba.conf'))
             if line.strip() and not line.startswith('#')]
    print(json.dumps({'logins': results, 'methods': rules, 'saved': deployment.read_state() == state}))
finally:
    deployment.down(print)
"""


def test_a_cluster_initialised_with_trust_gets_a_password(deployment_root):
    """An older deployment's PostgreSQL (trust logins, no password kept) is given a password at `up`."""
    bin_dir = airflow_bin()
    result = subprocess.run([os.path.join(bin_dir, 'python'), '-c', OLDER_CLUSTER, os.path.join(deployment_root, 'home')],
                            capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert 'new password set, password logins only' in result.stdout
    found = json.loads(result.stdout.splitlines()[-2])  # the last line: PostgreSQL stopped
    assert found['logins'][0].endswith('no password supplied') and found['logins'][1] == 'logged in'
    assert set(found['methods']) == {'scram-sha-256'} and found['saved']
    assert processes_of(deployment_root) == []
