"""The local runner: TFX's LocalDagRunner on Beam's FnApiRunner, MLMD in a sqlite file.

It only chooses (pipeline root, metadata store, Beam args under PETPARK_HOME) and calls
create_pipeline. Used by `tfx pipeline create --engine local --pipeline_path
pipeline/runners/local.py` and `tfx run create --engine local --pipeline_name petpark`;
`petpark run` calls the same `run()` with progress lines and a summary around it.
"""
from typing import Optional

from tfx.orchestration import metadata, pipeline as tfx_pipeline
from tfx.orchestration.local.local_dag_runner import LocalDagRunner

from petpark.pipeline import factory, synthetic_data
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
    return factory.pipeline_from_settings(
        settings, pipeline_root=settings.pipeline_root,
        metadata_connection_config=metadata.sqlite_metadata_connection_config(settings.metadata_path),
        beam_pipeline_args=beam.pipeline_beam_args(settings.beam), stop_after=stop_after)


def run(settings: Settings, pipeline: tfx_pipeline.Pipeline) -> None:
    """Runs the pipeline once, holding the run lock of its metadata store."""
    with run_lock.RunLock(settings.metadata_path):
        LocalDagRunner().run(pipeline)


if __name__ == '__main__':
    current = Settings.from_env()
    run(current, local_pipeline(current))
