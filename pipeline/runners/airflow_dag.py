"""Airflow: the same create_pipeline as a scheduled DAG, built at module level by TFX's AirflowDagRunner.

    tfx pipeline create --engine airflow --pipeline_path pipeline/runners/airflow_dag.py
    tfx run create --engine airflow --pipeline_name petpark

Settings come from the PETPARK_* environment of the Airflow scheduler and workers (`petpark airflow
up` passes its own). Airflow re-parses this file often, so parsing only builds objects: module code
comes from the installed petpark package (no wheel is built under the pipeline root), no data is
generated, and a missing data folder fails the ImageExampleGen task rather than the parse.
MLMD is PETPARK_METADATA's: `petpark airflow up` passes its PostgreSQL database `mlmd`, and the DAG
runs as many tasks at a time as Airflow's `parallelism` allows. Without it, MLMD is the sqlite file
the local runner uses, which takes one writer: one task at a time.
"""
import datetime
import os
from typing import Any, Dict

from airflow.configuration import conf
from airflow.utils.log.secrets_masker import mask_secret
from tfx.dsl.io import fileio
from tfx.orchestration import pipeline as tfx_pipeline
from tfx.orchestration.airflow.airflow_dag_runner import AirflowDagRunner, AirflowPipelineConfig

from petpark.pipeline import factory
from petpark.pipeline.inspection import store
from petpark.pipeline.runners import airflow_launcher, beam
from petpark.pipeline.settings import Settings

MAX_RETRY_DELAY = datetime.timedelta(hours=1)


def dag_config(settings: Settings) -> Dict[str, Any]:
    """airflow.models.DAG arguments: schedule, start date, no catch-up, retries with back-off; one task at a
    time on sqlite (one writer), else as many as Airflow's executor runs."""
    airflow = settings.airflow
    one_writer = settings.metadata_connection().HasField('sqlite')
    return {
        'schedule': None if airflow.schedule.lower() == 'none' else airflow.schedule,
        'start_date': airflow.start(),
        'catchup': False,
        'max_active_runs': 1,
        'max_active_tasks': 1 if one_writer else conf.getint('core', 'parallelism'),
        'default_args': {
            'retries': airflow.retries,
            'retry_delay': datetime.timedelta(seconds=airflow.retry_delay_s),
            'retry_exponential_backoff': True,
            'max_retry_delay': MAX_RETRY_DELAY,
        },
    }


def airflow_pipeline(settings: Settings) -> tfx_pipeline.Pipeline:
    """The pipeline with Airflow's choices: MLMD from the settings, Beam args as the local runner's."""
    connection = settings.metadata_connection()
    if connection.HasField('sqlite'):  # the file's folder, as TFX's sqlite helper makes it
        fileio.makedirs(os.path.dirname(connection.sqlite.filename_uri))
    else:
        store.handle_backslashes_on_postgresql()
        if connection.postgresql.password:
            mask_secret(connection.postgresql.password)  # *** wherever it would appear in a task log
    return factory.pipeline_from_settings(
        settings, pipeline_root=settings.pipeline_root, metadata_connection_config=connection,
        beam_pipeline_args=beam.pipeline_beam_args(settings.beam), user_code_from='installed')


def build_dag(settings: Settings):
    """The airflow.models.DAG of the pipeline, named PETPARK_PIPELINE_NAME."""
    return AirflowDagRunner(AirflowPipelineConfig(
        airflow_dag_config=dag_config(settings), supported_launcher_classes=[airflow_launcher.InProcessLauncher],
    )).run(airflow_pipeline(settings))


SETTINGS = Settings.from_env(check_data_root=False)
DAG = build_dag(SETTINGS)
