"""Airflow: the same create_pipeline as a scheduled DAG, built at module level by TFX's AirflowDagRunner.

    tfx pipeline create --engine airflow --pipeline_path pipeline/runners/airflow_dag.py
    tfx run create --engine airflow --pipeline_name petpark

Settings come from the PETPARK_* environment of the Airflow scheduler and workers (`petpark airflow
up` passes its own). Airflow re-parses this file often, so parsing only builds objects: module code
comes from the installed petpark package (no wheel is built under the pipeline root), no data is
generated, and a missing data folder fails the ImageExampleGen task rather than the parse.
MLMD is the same sqlite file as the local runner's, so `petpark models` and the registry see
Airflow's runs; one task runs at a time per DAG, as sqlite takes one writer.
"""
import datetime
from typing import Any, Dict

from tfx.orchestration import metadata, pipeline as tfx_pipeline
from tfx.orchestration.airflow.airflow_dag_runner import AirflowDagRunner, AirflowPipelineConfig

from petpark.pipeline import factory
from petpark.pipeline.runners import airflow_launcher, beam
from petpark.pipeline.settings import Settings

MAX_RETRY_DELAY = datetime.timedelta(hours=1)


def dag_config(settings: Settings) -> Dict[str, Any]:
    """airflow.models.DAG arguments: schedule, start date, no catch-up, retries with back-off."""
    airflow = settings.airflow
    return {
        'schedule': None if airflow.schedule.lower() == 'none' else airflow.schedule,
        'start_date': airflow.start(),
        'catchup': False,
        'max_active_runs': 1,
        'max_active_tasks': 1,
        'default_args': {
            'retries': airflow.retries,
            'retry_delay': datetime.timedelta(seconds=airflow.retry_delay_s),
            'retry_exponential_backoff': True,
            'max_retry_delay': MAX_RETRY_DELAY,
        },
    }


def airflow_pipeline(settings: Settings) -> tfx_pipeline.Pipeline:
    """The pipeline with Airflow's choices: MLMD sqlite and Beam args as the local runner's."""
    return factory.pipeline_from_settings(
        settings, pipeline_root=settings.pipeline_root,
        metadata_connection_config=metadata.sqlite_metadata_connection_config(settings.metadata_path),
        beam_pipeline_args=beam.pipeline_beam_args(settings.beam), user_code_from='installed')


def build_dag(settings: Settings):
    """The airflow.models.DAG of the pipeline, named PETPARK_PIPELINE_NAME."""
    return AirflowDagRunner(AirflowPipelineConfig(
        airflow_dag_config=dag_config(settings), supported_launcher_classes=[airflow_launcher.InProcessLauncher],
    )).run(airflow_pipeline(settings))


SETTINGS = Settings.from_env(check_data_root=False)
DAG = build_dag(SETTINGS)
