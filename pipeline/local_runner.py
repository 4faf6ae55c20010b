"""The local runner: TFX's LocalDagRunner on Beam's FnApiRunner, MLMD in a sqlite file.

It only chooses (pipeline root, metadata store, Beam args under PETPARK_HOME) and calls
create_pipeline. Used by `tfx pipeline create --engine local --pipeline_path
pipeline/local_runner.py` and `tfx run create --engine local --pipeline_name petpark`;
`petpark run` calls the same `run()` with progress lines and a summary around it.
"""
import os
import sys
from typing import List, Optional

# `tfx run create` runs this file as a script: its folder becomes sys.path[0], where
# this package's modules (config, console, ...) would shadow top-level modules of that name.
_HERE = os.path.dirname(os.path.abspath(__file__))
if sys.path and os.path.abspath(sys.path[0]) == _HERE:
    del sys.path[0]

from tfx.orchestration import metadata, pipeline as tfx_pipeline  # noqa: E402
from tfx.orchestration.local.local_dag_runner import LocalDagRunner  # noqa: E402

from petpark.pipeline import config, factory, run_lock, synthetic_data  # noqa: E402


# Runners whose workers are this interpreter or its subprocesses: nothing is staged for them.
IN_PROCESS_RUNNERS = ('fnapirunner', 'bundlebaseddirectrunner')  # as Beam matches names: any case
# TFX as the workers' requirement, in place of the sdist TFX would build (see worker_dependency_args).
BEAM_REQUIREMENTS = os.path.join(_HERE, 'beam_requirements.txt')
# The Beam flags by which TFX knows that the workers' dependencies are provided.
DEPENDENCY_FLAGS = ('--extra_package', '--setup_file', '--requirements_file',
                    '--worker_harness_container_image', '--sdk_container_image')


def beam_pipeline_args(workers: int) -> List[str]:
    """FnApiRunner directly: Beam 2.74's DirectRunner first tries Prism, which downloads a binary."""
    mode = 'in_memory' if workers == 1 else 'multi_processing'
    return worker_dependency_args(
        ['--runner=FnApiRunner', f'--direct_running_mode={mode}', f'--direct_num_workers={workers}'])


def worker_dependency_args(args: List[str]) -> List[str]:
    """args, plus BEAM_REQUIREMENTS for an in-process runner given no dependency flag.

    Without a dependency flag, every Beam-powered TFX executor repackages TFX's installed
    source (a 1 MB sdist built in about 2 s) into a new temporary folder of about 50 MB that
    nothing removes, so each run leaves about 50 MB per Beam component behind. In-process
    runners ignore the file; it names what TFX's sdist would bring to a runner that stages.
    """
    runner = next((arg.split('=', 1)[1] for arg in args if arg.startswith('--runner=')), '')
    name = runner.rsplit('.', 1)[-1].lower()
    if name.removesuffix('runner') + 'runner' not in IN_PROCESS_RUNNERS or any(
            arg.split('=', 1)[0] in DEPENDENCY_FLAGS for arg in args):
        return args
    return args + [f'--requirements_file={BEAM_REQUIREMENTS}']


def pipeline_beam_args(settings: config.Settings) -> List[str]:
    """PETPARK_BEAM_ARGS when given (e.g. a Flink or Spark cluster), else the local FnApiRunner."""
    given = settings.beam_arg_list()
    return worker_dependency_args(given) if given else beam_pipeline_args(settings.beam_workers)


def local_pipeline(settings: config.Settings, stop_after: Optional[str] = None) -> tfx_pipeline.Pipeline:
    """The pipeline with this machine's choices; the default dataset must exist already."""
    if not settings.data_root and not synthetic_data.exists(settings.synthetic_data_root):
        raise ValueError(f'No input data: PETPARK_DATA_ROOT is empty and the default dataset is not in '
                         f'{settings.synthetic_data_root}. Set PETPARK_DATA_ROOT, or generate it with '
                         f'`petpark synth --out {settings.synthetic_data_root} --count {settings.synthetic_count}` '
                         '(`petpark run` does this on its first run).')
    return factory.create_pipeline(
        settings, pipeline_root=settings.pipeline_root,
        metadata_connection_config=metadata.sqlite_metadata_connection_config(settings.metadata_path),
        beam_pipeline_args=pipeline_beam_args(settings), stop_after=stop_after)


def run(settings: config.Settings, pipeline: tfx_pipeline.Pipeline) -> None:
    """Runs the pipeline once, holding the run lock of its metadata store."""
    with run_lock.RunLock(settings.metadata_path):
        LocalDagRunner().run(pipeline)


if __name__ == '__main__':
    settings = config.Settings.from_env()
    run(settings, local_pipeline(settings))
