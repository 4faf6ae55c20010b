"""`petpark airflow up|down|status`: a real Airflow deployment on one machine.

PostgreSQL (pgserver's bundled build, or PETPARK_AIRFLOW_POSTGRES_BIN) is initialised into
`<home>/airflow/postgres/`, listens on 127.0.0.1 only and takes only SCRAM password logins; Airflow's
LocalExecutor scheduler and its webserver use it. The secrets (database and admin passwords, the
webserver's secret key) are in deployment.json and airflow.cfg, both 0600, in a folder no other user
may list or enter (as root, PostgreSQL's user `nobody` may only pass through it to postgres/).
Every process is started in its own process group, its PID written to
`<home>/airflow/pids/<name>.pid`, and `down` stops it by that PID (SIGTERM, then SIGKILL).
AIRFLOW_HOME is `<home>/airflow`: its airflow.cfg holds everything, so `airflow ...` and
`tfx ... --engine airflow` commands work with only AIRFLOW_HOME set (`status` prints it).
MLMD is the database `mlmd` of the same PostgreSQL, owned by the role `mlmd` (its own password, no
rights on Airflow's database): the scheduler and its tasks get it as PETPARK_METADATA (unless
PETPARK_METADATA names another store), so the training DAG's tasks and the monitoring DAG
(pipeline/runners/monitor_dag.py, installed into dags/ by `up`) write to it side by side.
"""
import contextlib
import dataclasses
import importlib.util
import json
import os
import pwd
import secrets
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from typing import Dict, Iterator, List, Optional

from petpark.pipeline.settings import Settings, masked_url
from petpark.serving.files import write_text_atomically
from petpark.serving.ports import free_port, port_open

DB_NAME = 'airflow'
DB_USER = 'airflow'
MLMD_NAME = 'mlmd'  # MLMD's database and the role that owns it
# The monitoring DAG's file in dags/: the DAG is built by the installed petpark (never a stale copy).
MONITOR_DAG_FILE = """# Written by `petpark airflow up`: the Airflow DAG `{dag_id}`, built by pipeline/runners/monitor_dag.py.
from petpark.pipeline.runners.monitor_dag import DAG  # noqa: F401
"""
POSTGRES = 'postgres'
SERVICES = ('scheduler', 'webserver')
STOP_SECONDS = 30
START_SECONDS = 180
# PostgreSQL refuses to run as root; as root, petpark runs it as this user.
ROOT_POSTGRES_USER = 'nobody'
PG_HBA = """# Written by `petpark airflow up`: SCRAM password logins only, local and loopback.
local   all   all                  scram-sha-256
host    all   all   127.0.0.1/32   scram-sha-256
host    all   all   ::1/128        scram-sha-256
"""


class DeploymentError(ValueError):
    """A deployment step failed; the message says which and where its log is."""


def pid_alive(pid: Optional[int]) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours is not running
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError:
        return True


def postgres_bin(settings: Settings) -> str:
    """The folder with initdb, pg_ctl and postgres."""
    if settings.airflow.postgres_bin:
        folder = settings.airflow.postgres_bin
    else:
        spec = importlib.util.find_spec('pgserver')
        if spec is None or not spec.submodule_search_locations:
            raise DeploymentError('PostgreSQL: the pgserver package is not installed (it is in the Airflow '
                                  'environment: `make airflow`), and PETPARK_AIRFLOW_POSTGRES_BIN is empty')
        folder = os.path.join(list(spec.submodule_search_locations)[0], 'pginstall', 'bin')
    missing = [tool for tool in ('initdb', 'pg_ctl', 'postgres') if not os.access(os.path.join(folder, tool), os.X_OK)]
    if missing:
        raise DeploymentError(f'PETPARK_AIRFLOW_POSTGRES_BIN: {folder!r} has no executable {missing[0]}')
    return folder


class Deployment:
    """One machine's Airflow under `<home>/airflow`, driven by the airflow executable next to this Python."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.home = settings.airflow_home
        self.bin = os.path.dirname(sys.executable)
        self.state_path = os.path.join(self.home, 'deployment.json')

    # paths
    def _path(self, *parts: str) -> str:
        return os.path.join(self.home, *parts)

    def pid_file(self, name: str) -> str:
        return self._path('pids', f'{name}.pid')

    def log_file(self, name: str) -> str:
        return self._path('logs', f'{name}.log')

    @property
    def pg_data(self) -> str:
        return self._path('postgres', 'data')

    def environment(self) -> Dict[str, str]:
        """What every Airflow process gets: AIRFLOW_HOME, this venv first on PATH, absolute PETPARK_HOME,
        and PETPARK_METADATA: the deployment's MLMD database unless the setting names another store."""
        env = dict(os.environ)
        env.update(AIRFLOW_HOME=self.home, PETPARK_HOME=self.settings.home,
                   PATH=self.bin + os.pathsep + env.get('PATH', ''))
        metadata = self.metadata_url()
        if metadata:
            env['PETPARK_METADATA'] = metadata
        return env

    def metadata_url(self) -> str:
        """The MLMD store the deployment's tasks use: PETPARK_METADATA if set, else the `mlmd` database
        (once `up` created it; the URL holds its password)."""
        return self.settings.metadata or self.read_state().get('metadata', '')

    def read_state(self) -> dict:
        try:
            with open(self.state_path) as f:
                return json.load(f)
        except FileNotFoundError:
            return {}

    def _write_state(self, state: dict) -> None:
        write_text_atomically(self.state_path, json.dumps(state, indent=1) + '\n', mode=0o600)  # holds the passwords

    def read_pid(self, name: str) -> Optional[int]:
        try:
            with open(self.pid_file(name)) as f:
                return int(f.read().strip() or 0) or None
        except (FileNotFoundError, ValueError):
            return None

    # up
    def up(self, log=print) -> dict:
        if importlib.util.find_spec('airflow') is None or not os.access(os.path.join(self.bin, 'airflow'), os.X_OK):
            raise DeploymentError('Airflow is not installed in this environment. Create the Airflow environment '
                                  'with `make airflow`, then run `.venv-airflow/bin/petpark airflow up`.')
        self._secure_home()
        for folder in ('pids', 'logs', 'dags'):
            os.makedirs(self._path(folder), exist_ok=True)
        state = self.read_state()
        state.setdefault('db_port', self.settings.airflow.db_port or free_port())
        state['web_port'] = self.settings.airflow.web_port
        state.setdefault('secret_key', secrets.token_hex(16))
        state.setdefault('mlmd_password', secrets.token_urlsafe(24))
        self._write_state(state)
        self._start_postgres(state, log)
        self._create_metadata_store(state, log)
        self._write_config(state)
        self._install_monitor_dag(log)
        self._airflow(['db', 'migrate'], 'migrate', log, 'Airflow database migrated')
        if not state.get('admin_password'):
            state['admin_password'] = secrets.token_urlsafe(12)
            # no --password: Airflow asks for it (twice), and with no terminal reads it from stdin,
            # so it never appears in a command line or an environment
            self._airflow(['users', 'create', '--role', 'Admin', '--username', 'admin', '--email', 'admin@localhost',
                           '--firstname', 'pet', '--lastname', 'park'], 'users', log, 'Airflow user admin created',
                          stdin='{0}\n{0}\n'.format(state['admin_password']))
            self._write_state(state)
        self._start('scheduler', ['scheduler'], log)
        if port_open(state['web_port']) and not pid_alive(self.read_pid('webserver')):
            raise DeploymentError(f'PETPARK_AIRFLOW_WEB_PORT: port {state["web_port"]} on 127.0.0.1 is taken '
                                  'by another program')
        self._start('webserver', ['webserver'], log)
        self._wait_for_web(state['web_port'])
        log(f'Airflow UI http://127.0.0.1:{state["web_port"]} (user admin, password in {self.state_path})')
        return state

    def _secure_home(self) -> None:
        """<home>/airflow holds the secrets: no other user may list or enter it. As root, PostgreSQL runs as
        ROOT_POSTGRES_USER, which must pass through it to postgres/: its group (that user's) may only enter."""
        os.makedirs(self.home, exist_ok=True)
        user = self._postgres_user()
        if user:
            self._check_reachable(self.home, user)
            os.chown(self.home, -1, user.pw_gid)
        os.chmod(self.home, 0o710 if user else 0o700)

    def _write_config(self, state: dict) -> None:
        logs = self._path('logs')
        write_text_atomically(self._path('airflow.cfg'), f"""# Written by `petpark airflow up`; rewritten on each start.
[core]
dags_folder = {self._path('dags')}
executor = LocalExecutor
parallelism = 2
load_examples = False
# importing TensorFlow and TFX takes ~15 s on two cores
dagbag_import_timeout = 240
dag_file_processor_timeout = 300

[database]
sql_alchemy_conn = postgresql+psycopg2://{DB_USER}:{state['db_password']}@127.0.0.1:{state['db_port']}/{DB_NAME}

[logging]
base_log_folder = {logs}
dag_processor_manager_log_location = {os.path.join(logs, 'dag_processor_manager.log')}

[scheduler]
# new DAG files are found quickly; a known file is re-parsed every 5 minutes (each parse imports TFX)
dag_dir_list_interval = 15
min_file_process_interval = 300
child_process_log_directory = {os.path.join(logs, 'scheduler')}

[webserver]
web_server_host = 127.0.0.1
web_server_port = {state['web_port']}
workers = 1
secret_key = {state['secret_key']}
""", mode=0o600)

    def _postgres_user(self) -> Optional[pwd.struct_passwd]:
        return pwd.getpwnam(ROOT_POSTGRES_USER) if os.geteuid() == 0 else None

    def _run_postgres_tool(self, args: List[str], what: str, stdin: str = '') -> None:
        user = self._postgres_user()
        ids = {'user': user.pw_uid, 'group': user.pw_gid, 'extra_groups': []} if user else {}
        with open(self._path('postgres', 'setup.log'), 'ab') as out:
            result = subprocess.run(args, input=stdin.encode(), stdout=out, stderr=subprocess.STDOUT,
                                    timeout=START_SECONDS, **ids)
        if result.returncode:
            raise DeploymentError(f'PostgreSQL: {what} failed (exit {result.returncode}); see '
                                  f'{self._path("postgres", "setup.log")} and {self._path("postgres", "server.log")}')

    @contextlib.contextmanager
    def _password_file(self, password: str) -> Iterator[str]:
        """A 0600 file with the password that only PostgreSQL's user can read, removed afterwards."""
        path = self._path('postgres', 'initdb.password')
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            user = self._postgres_user()
            if user:
                os.fchown(descriptor, user.pw_uid, user.pw_gid)
            with os.fdopen(descriptor, 'w') as f:
                f.write(password + '\n')
            yield path
        finally:
            remove(path)

    def _set_password(self, state: dict, tools: str, log) -> None:
        """Gives the database user a new password (kept in deployment.json) on a fresh cluster, or on one
        whose password is unknown (initialised by an older petpark with trust logins, or deployment.json
        lost): in single-user mode, which needs no login, with the statement on stdin."""
        password = secrets.token_urlsafe(24)
        if not os.path.isfile(os.path.join(self.pg_data, 'PG_VERSION')):
            remove(self._path('postgres', 'initdb.password'))  # left by an interrupted initdb
            with self._password_file(password) as password_file:
                self._run_postgres_tool([os.path.join(tools, 'initdb'), '-D', self.pg_data, '-U', DB_USER,
                                         '--auth=scram-sha-256', f'--pwfile={password_file}', '--encoding=UTF8',
                                         '--no-instructions'], 'initdb')
            log(f'PostgreSQL initialised in {self.pg_data} (password logins only)')
        else:
            if pid_alive(self.read_pid(POSTGRES)):
                raise DeploymentError(f'PostgreSQL in {self.pg_data} runs, but deployment.json holds no password '
                                      'for it: stop it with `petpark airflow down`, then `up` sets one')
            self._run_postgres_tool([os.path.join(tools, 'postgres'), '--single', '-D', self.pg_data, 'postgres'],
                                    'setting the password', stdin=f"ALTER ROLE {DB_USER} PASSWORD '{password}';\n")
            hba = os.path.join(self.pg_data, 'pg_hba.conf')
            write_text_atomically(hba, PG_HBA, mode=0o600)
            user = self._postgres_user()
            if user:
                os.chown(hba, user.pw_uid, user.pw_gid)
            log(f'PostgreSQL in {self.pg_data}: new password set, password logins only')
        state['db_password'] = password
        self._write_state(state)

    def _start_postgres(self, state: dict, log) -> None:
        folder, port = self._path('postgres'), state['db_port']
        os.makedirs(folder, exist_ok=True)
        os.chmod(folder, 0o700)
        user = self._postgres_user()
        if user:
            os.chown(folder, user.pw_uid, user.pw_gid)
        tools = postgres_bin(self.settings)
        if not state.get('db_password') or not os.path.isfile(os.path.join(self.pg_data, 'PG_VERSION')):
            self._set_password(state, tools, log)
        if not pid_alive(self.read_pid(POSTGRES)):
            if port_open(port):
                raise DeploymentError(f'PostgreSQL: port {port} on 127.0.0.1 is taken by another program '
                                      '(set PETPARK_AIRFLOW_DB_PORT, or delete deployment.json to pick a new one)')
            self._run_postgres_tool([
                os.path.join(tools, 'pg_ctl'), 'start', '-w', '-t', str(START_SECONDS), '-D', self.pg_data,
                '-l', os.path.join(folder, 'server.log'),
                '-o', f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories=''"], 'start')
            with open(os.path.join(self.pg_data, 'postmaster.pid')) as f:
                write_text_atomically(self.pid_file(POSTGRES), f.readline().strip() + '\n')
        self._create_database(port, state['db_password'])
        log(f'PostgreSQL on 127.0.0.1:{port} (pid {self.read_pid(POSTGRES)})')

    @staticmethod
    def _check_reachable(folder: str, user: pwd.struct_passwd) -> None:
        """As root, PostgreSQL runs as `nobody`, which must be able to walk down to `folder` (every folder
        above it must let others enter)."""
        parent = os.path.dirname(os.path.abspath(folder))
        while True:
            if not os.stat(parent).st_mode & 0o001:
                raise DeploymentError(
                    f'PostgreSQL refuses to run as root, so petpark runs it as {user.pw_name!r}, which cannot '
                    f'enter {parent}: `chmod o+x {parent}`, choose a PETPARK_HOME it can reach, or run as a '
                    'normal user')
            if parent == os.path.dirname(parent):
                return
            parent = os.path.dirname(parent)

    def _connect(self, port: int, password: Optional[str], database: str):
        """A psycopg2 connection as DB_USER with the password; DeploymentError when it is refused."""
        import psycopg2
        try:
            return psycopg2.connect(host='127.0.0.1', port=port, user=DB_USER, password=password, dbname=database,
                                    connect_timeout=10)
        except psycopg2.OperationalError as e:
            reason = str(e).strip().splitlines()[-1]
            raise DeploymentError(f'PostgreSQL on 127.0.0.1:{port}: cannot log in as {DB_USER} ({reason}); see '
                                  f'{self._path("postgres", "server.log")}') from None

    def _create_database(self, port: int, password: str) -> None:
        connection = self._connect(port, password, 'postgres')
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute('SELECT 1 FROM pg_database WHERE datname = %s', (DB_NAME,))
                if cursor.fetchone() is None:
                    cursor.execute(f'CREATE DATABASE {DB_NAME}')
        finally:
            connection.close()

    def _create_metadata_store(self, state: dict, log) -> None:
        """The role and database `mlmd` (the role owns the database and may not connect to Airflow's), the
        role's password set from deployment.json (sent hashed), and MLMD's tables created now, before two
        tasks could race to create them. The URL goes into deployment.json as `metadata`."""
        import psycopg2.extensions
        connection = self._connect(state['db_port'], state['db_password'], 'postgres')
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute('SELECT 1 FROM pg_roles WHERE rolname = %s', (MLMD_NAME,))
                if cursor.fetchone() is None:
                    cursor.execute(f'CREATE ROLE {MLMD_NAME} LOGIN')
                verifier = psycopg2.extensions.encrypt_password(state['mlmd_password'], MLMD_NAME, connection,
                                                                'scram-sha-256')
                cursor.execute(f'ALTER ROLE {MLMD_NAME} PASSWORD %s', (verifier,))
                cursor.execute('SELECT 1 FROM pg_database WHERE datname = %s', (MLMD_NAME,))
                if cursor.fetchone() is None:
                    cursor.execute(f'CREATE DATABASE {MLMD_NAME} OWNER {MLMD_NAME}')
                cursor.execute(f'REVOKE ALL ON DATABASE {DB_NAME} FROM PUBLIC')
        finally:
            connection.close()
        password = urllib.parse.quote(state['mlmd_password'], safe='')
        state['metadata'] = f"postgresql://{MLMD_NAME}:{password}@127.0.0.1:{state['db_port']}/{MLMD_NAME}"
        self._write_state(state)
        from petpark.pipeline.inspection import store
        try:
            store.open_store(dataclasses.replace(self.settings, metadata=state['metadata']).metadata_connection(),
                             read_only=False)
        except store.MetadataError as e:
            raise DeploymentError(f'MLMD in PostgreSQL: {e}') from None
        log(f'MLMD in PostgreSQL: {masked_url(state["metadata"])}'
            + ('' if not self.settings.metadata else f' (the tasks use PETPARK_METADATA: '
               f'{masked_url(self.settings.metadata)})'))

    def _install_monitor_dag(self, log) -> None:
        """dags/<pipeline_name>_monitor.py: `petpark monitor` on PETPARK_MONITOR_SCHEDULE (paused at first)."""
        name = f'{self.settings.pipeline_name}_monitor'
        write_text_atomically(self._path('dags', f'{name}.py'), MONITOR_DAG_FILE.format(dag_id=name))
        log(f'Monitoring DAG {name} installed in {self._path("dags")} (`airflow dags unpause {name}` starts it)')

    def _airflow(self, args: List[str], name: str, log, done: str, stdin: str = '') -> None:
        """Runs `airflow ARGS` with no terminal (a prompt reads `stdin`), its output in its log."""
        with open(self.log_file(name), 'ab') as out:
            result = subprocess.run([os.path.join(self.bin, 'airflow')] + args, input=stdin.encode(), stdout=out,
                                    stderr=subprocess.STDOUT, env=self.environment(), timeout=600,
                                    start_new_session=True)
        if result.returncode:
            raise DeploymentError(f'`airflow {" ".join(args[:2])}` failed (exit {result.returncode}); '
                                  f'see {self.log_file(name)}')
        log(done)

    def _start(self, name: str, args: List[str], log) -> None:
        pid = self.read_pid(name)
        if pid_alive(pid):
            log(f'Airflow {name} already running (pid {pid})')
            return
        with open(self.log_file(name), 'ab') as out:
            process = subprocess.Popen([os.path.join(self.bin, 'airflow')] + args, stdout=out,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       env=self.environment(), start_new_session=True)
        write_text_atomically(self.pid_file(name), f'{process.pid}\n')
        time.sleep(2)
        if process.poll() is not None:
            raise DeploymentError(f'Airflow {name} exited at once (exit {process.returncode}); '
                                  f'see {self.log_file(name)}')
        log(f'Airflow {name} started (pid {process.pid}, log {self.log_file(name)})')

    def _wait_for_web(self, port: int) -> None:
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if not pid_alive(self.read_pid('webserver')):
                raise DeploymentError(f'Airflow webserver stopped; see {self.log_file("webserver")}')
            try:
                with urllib.request.urlopen(f'http://127.0.0.1:{port}/health', timeout=5) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            time.sleep(2)
        raise DeploymentError(f'Airflow webserver not answering on 127.0.0.1:{port} after {START_SECONDS} s; '
                              f'see {self.log_file("webserver")}')

    # down
    def down(self, log=print) -> None:
        for name in reversed(SERVICES):
            self._stop_group(name, log)
        pid = self.read_pid(POSTGRES)
        if pid_alive(pid):
            os.kill(pid, signal.SIGINT)  # PostgreSQL's fast shutdown
            if not wait_gone(pid, STOP_SECONDS):
                os.kill(pid, signal.SIGKILL)
                wait_gone(pid, 5)
            log(f'PostgreSQL stopped (pid {pid})')
        remove(self.pid_file(POSTGRES))

    def _stop_group(self, name: str, log) -> None:
        """Stops the process group the service leads (LocalExecutor workers, gunicorn workers) by its PID."""
        import psutil
        pid = self.read_pid(name)
        if pid_alive(pid):
            try:  # task processes start their own sessions, so the group alone misses them
                descendants = psutil.Process(pid).children(recursive=True)
            except psutil.NoSuchProcess:
                descendants = []
            signal_group(pid, signal.SIGTERM)
            if not wait_gone(pid, STOP_SECONDS):
                signal_group(pid, signal.SIGKILL)
                wait_gone(pid, 5)
            signal_group(pid, signal.SIGKILL)
            for process in descendants:
                try:
                    process.kill()
                except psutil.NoSuchProcess:
                    pass
            psutil.wait_procs(descendants, timeout=5)
            log(f'Airflow {name} stopped (pid {pid})')
        remove(self.pid_file(name))

    # status
    def status(self) -> List[str]:
        state = self.read_state()
        if not state:
            return [f'No Airflow deployment in {self.home} (start one with `petpark airflow up`)']
        ports = {POSTGRES: state.get('db_port'), 'webserver': state.get('web_port'), 'scheduler': None}
        lines = [f'AIRFLOW_HOME={self.home}']
        for name in (POSTGRES,) + SERVICES:
            pid = self.read_pid(name)
            where = f' on 127.0.0.1:{ports[name]}' if ports[name] else ''
            lines.append(f'  {name:<10} ' + (f'running (pid {pid}){where}' if pid_alive(pid) else 'stopped'))
        metadata, where = self.metadata_url(), f'sqlite {self.settings.metadata_path}'
        if metadata:
            where = f'{masked_url(metadata)} (PETPARK_METADATA of the scheduler and its tasks' + (
                ')' if self.settings.metadata else f'; with its password: `metadata` in {self.state_path})')
        lines.append(f'  {"MLMD":<10} {where}')
        if pid_alive(self.read_pid(POSTGRES)):
            runs = self.last_runs(state['db_port'], state.get('db_password'))
            lines.append('Last DAG runs:' if runs else 'No DAG runs yet.')
            lines += [f"  {r['dag_id']}  {r['run_id']}  {r['state']}  started {r['start_date'] or '-'}  "
                      f"ended {r['end_date'] or '-'}" for r in runs]
        return lines

    def last_runs(self, port: int, password: Optional[str], limit: int = 5) -> List[dict]:
        connection = self._connect(port, password, DB_NAME)
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT to_regclass('dag_run')")
                if cursor.fetchone()[0] is None:
                    return []
                cursor.execute('SELECT dag_id, run_id, state, start_date, end_date FROM dag_run '
                               'ORDER BY COALESCE(start_date, queued_at, execution_date) DESC LIMIT %s', (limit,))
                names = [column[0] for column in cursor.description]
                return [dict(zip(names, row)) for row in cursor.fetchall()]
        finally:
            connection.close()


def signal_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        try:  # reap it if it is our child
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.2)
    return not pid_alive(pid)


def remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
