"""The local runner: TFX's LocalDagRunner on Beam's FnApiRunner, MLMD in a sqlite file (or PETPARK_METADATA).

It only chooses (pipeline root, metadata store, Beam args under PETPARK_HOME) and calls
create_pipeline. Used by `tfx pipeline create --engine local --pipeline_path
pipeline/runners/local.py` and `tfx run create --engine local --pipeline_name petpark`;
`petpark run` calls the same `run()` with progress lines and a summary around it.
"""
import contextlib
import logging
import os
from typing import Iterator, Optional

from tfx.dsl.io import fileio
from tfx.orchestration import pipeline as tfx_pipeline
from tfx.orchestration.local.local_dag_runner import LocalDagRunner

from petpark.pipeline import factory, synthetic_data
from petpark.pipeline.inspection import store
from petpark.pipeline.ops import run_lock
from petpark.pipeline.runners import beam
from petpark.pipeline.settings import Settings


def local_pipeline(settings: Settings, stop_after: Optional[str] = None) -> tfx_pipeline.Pipeline:
    """The pipeline with this machine's choices; the default dataset must exist already."""
    if not settings.data.data_root and not synthetic_data.exists(settings.synthetic_data_root):
        raise ValueError(f'No input data: PETPARK_DATA_ROOT is empty and the default dataset is not in '
                         f'{settings.synthetic_data_root}. Set PETPARK_DATA_ROOT, or generate it with '
                         f'`petpark synth --out {settings.synthetic_data_root} --count {settings.data.synthetic_count}` '
                         '(`petpark run` does this on its first run).')
    connection = settings.metadata_connection()
    if connection.HasField('sqlite'):  # the file's folder, as TFX's sqlite helper makes it
        fileio.makedirs(os.path.dirname(connection.sqlite.filename_uri))
    else:
        store.handle_backslashes_on_postgresql()
    return factory.pipeline_from_settings(
        settings, pipeline_root=settings.pipeline_root, metadata_connection_config=connection,
        beam_pipeline_args=beam.pipeline_beam_args(settings.beam), stop_after=stop_after)


class _PasswordMask(logging.Filter):
    """Writes a password as *** in every record (LocalDagRunner logs its whole MLMD connection config)."""

    def __init__(self, password: str):
        super().__init__()
        self.password = password

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.password in message:
            record.msg, record.args = message.replace(self.password, '***'), None
        return True


@contextlib.contextmanager
def _password_masked(pipeline: tfx_pipeline.Pipeline) -> Iterator[None]:
    config = pipeline.metadata_connection_config
    password = config.postgresql.password if config is not None and config.HasField('postgresql') else ''
    mask, logger = _PasswordMask(password), logging.getLogger('absl')
    if password:
        logger.addFilter(mask)
    try:
        yield
    finally:
        logger.removeFilter(mask)


def run(settings: Settings, pipeline: tfx_pipeline.Pipeline) -> None:
    """Runs the pipeline once, holding the run lock beside the home's sqlite file (also when MLMD is
    elsewhere: one local run per home)."""
    with run_lock.RunLock(settings.metadata_path), _password_masked(pipeline):
        LocalDagRunner().run(pipeline)


if __name__ == '__main__':
    current = Settings.from_env()
    run(current, local_pipeline(current))
