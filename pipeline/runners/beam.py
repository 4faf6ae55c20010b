"""Beam pipeline args for every Beam-powered component: PETPARK_BEAM_ARGS as given, else the local
FnApiRunner, with the dependency flag that keeps TFX from repackaging itself for in-process runners."""
import os
from typing import List

from petpark.pipeline.settings import BeamSettings

# Runners whose workers are this interpreter or its subprocesses: nothing is staged for them.
IN_PROCESS_RUNNERS = ('fnapirunner', 'bundlebaseddirectrunner')  # as Beam matches names: any case
# TFX as the workers' requirement, in place of the sdist TFX would build (see worker_dependency_args).
BEAM_REQUIREMENTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'beam_requirements.txt')
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


def pipeline_beam_args(beam: BeamSettings) -> List[str]:
    """PETPARK_BEAM_ARGS when given (e.g. a Flink or Spark cluster), else the local FnApiRunner."""
    given = beam.arg_list()
    return worker_dependency_args(given) if given else beam_pipeline_args(beam.beam_workers)
