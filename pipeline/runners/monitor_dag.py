"""Airflow: `petpark monitor` over each interval of PETPARK_MONITOR_SCHEDULE, the DAG `<pipeline_name>_monitor`.

Each run checks one window, the run's data interval [start, end), by running `petpark monitor --since
START --until END` as a process of its own (the CLI's exit status, console and log file; its output goes
to the task log). PASS and INCONCLUSIVE (too few frames, no baseline) succeed; a BREACH fails the task at
once, without retries, so the run shows red; any other failure (nothing pushed, no request logs, MLMD
unreachable) is retried like the training DAG's tasks (PETPARK_AIRFLOW_RETRIES). Schedule `none`: no
DAG. One run at a time, no catch-up. Parsing only builds objects: nothing is written, nothing of
TensorFlow imported. `petpark airflow up` installs it (`$AIRFLOW_HOME/dags/<pipeline_name>_monitor.py`
imports this module); `airflow dags unpause <pipeline_name>_monitor` starts the schedule.
"""
import datetime
import logging
import re
import subprocess
import sys
from typing import List, Optional

from airflow.exceptions import AirflowException, AirflowFailException
from airflow.models.dag import DAG as AirflowDag
from airflow.operators.python import PythonOperator
from airflow.utils.log.secrets_masker import mask_secret

from petpark.pipeline.settings import Settings

MAX_RETRY_DELAY = datetime.timedelta(hours=1)
TASK_ID = 'monitor'
# `petpark monitor`'s exit statuses (monitoring/monitor.py EXIT_CODES; a test checks they agree)
VERDICTS = {0: 'PASS', 1: 'BREACH', 3: 'INCONCLUSIVE'}
BREACH_LINE = re.compile(r'^\S+ version \S+, window \S+: BREACH$', re.M)  # run_window's verdict line
log = logging.getLogger('airflow.task')


def dag_id(settings: Settings) -> str:
    return f'{settings.pipeline_name}_monitor'


def monitor_command(since: int, until: int) -> List[str]:
    """`petpark monitor` over [since, until) (epoch seconds), with this environment's Python."""
    return [sys.executable, '-m', 'petpark.pipeline.cli', 'monitor', '--since', str(since), '--until', str(until)]


def verdict(exit_code: int, output: str) -> str:
    """The window's verdict from `petpark monitor`'s exit status and output: AirflowFailException (never
    retried) on a BREACH, AirflowException (retried) when the monitor failed. Python exits 1 on an uncaught
    exception too: exit 1 is a breach only with the monitor's `window ...: BREACH` line."""
    found = VERDICTS.get(exit_code)
    if found == 'BREACH' and BREACH_LINE.search(output):
        raise AirflowFailException('petpark monitor: BREACH (the reasons, report and alerts are in the log above)')
    if found in (None, 'BREACH'):
        last = (output.strip().splitlines() or ['no output'])[-1]
        raise AirflowException(f'petpark monitor failed (exit {exit_code}): {last}')
    return found


def check_window(data_interval_start: datetime.datetime, data_interval_end: datetime.datetime, **_) -> str:
    """The task: `petpark monitor` over the run's data interval; returns the verdict."""
    command = monitor_command(int(data_interval_start.timestamp()), int(data_interval_end.timestamp()))
    log.info('Running %s', ' '.join(command))
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            text=True)
    for line in result.stdout.splitlines():
        log.info('%s', line)
    found = verdict(result.returncode, result.stdout)
    log.info('Window %s - %s: %s', data_interval_start, data_interval_end, found)
    return found


def build_dag(settings: Settings) -> Optional[AirflowDag]:
    """The monitoring DAG from the settings; None when PETPARK_MONITOR_SCHEDULE is `none`."""
    schedule = settings.monitoring.schedule.strip()
    if schedule.lower() == 'none':
        return None
    connection = settings.metadata_connection()
    if connection.HasField('postgresql') and connection.postgresql.password:
        mask_secret(connection.postgresql.password)  # *** wherever it would appear in a task log
    airflow = settings.airflow
    with AirflowDag(
            dag_id=dag_id(settings), schedule=schedule, start_date=airflow.start(), catchup=False,
            max_active_runs=1, tags=['petpark', 'monitoring'], doc_md=__doc__,
            default_args={'retries': airflow.retries, 'retry_delay': datetime.timedelta(seconds=airflow.retry_delay_s),
                          'retry_exponential_backoff': True, 'max_retry_delay': MAX_RETRY_DELAY}) as dag:
        PythonOperator(task_id=TASK_ID, python_callable=check_window)
    return dag


SETTINGS = Settings.from_env(check_data_root=False)
DAG = build_dag(SETTINGS)
