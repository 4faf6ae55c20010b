"""What a person sees during a run: progress lines (pipeline/progress.py) and a summary.

Quiet mode sends every other byte (TF, absl, Beam, pip and wheel-build subprocesses,
Keras) to a log file by redirecting file descriptors 1 and 2, so nothing is lost and
nothing drowns the progress lines. Verbose mode leaves all output on the terminal.
"""
import os
import sys
import warnings
from typing import TextIO

from absl import logging as absl_logging


class Console:
    """Context manager for a run's output. `out` is the terminal in both modes."""

    def __init__(self, verbose: bool, log_path: str):
        self.verbose = verbose
        self.log_path = log_path
        self.out: TextIO = sys.stdout
        self._saved_fds = []
        self._saved_streams = None

    def __enter__(self) -> 'Console':
        sys.stdout.flush()
        sys.stderr.flush()
        if not self.verbose:
            os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
            self._saved_fds = [os.dup(1), os.dup(2)]
            self.out = os.fdopen(os.dup(self._saved_fds[0]), 'w', buffering=1)
            log_fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(log_fd, 1)
            os.dup2(log_fd, 2)
            os.close(log_fd)
            # Python-level streams too, for hosts where sys.stdout is not descriptor 1.
            self._saved_streams = (sys.stdout, sys.stderr)
            sys.stdout = sys.stderr = os.fdopen(os.dup(1), 'w', buffering=1)
        self._saved_verbosity = absl_logging.get_verbosity()
        absl_logging.set_verbosity(absl_logging.INFO)  # the log file gets TFX's whole account
        return self

    def __exit__(self, *exc) -> None:
        absl_logging.set_verbosity(self._saved_verbosity)
        sys.stdout.flush()
        sys.stderr.flush()
        if self._saved_streams:
            sys.stdout.close()
            sys.stdout, sys.stderr = self._saved_streams
            self._saved_streams = None
        if self._saved_fds:
            os.dup2(self._saved_fds[0], 1)
            os.dup2(self._saved_fds[1], 2)
            for fd in self._saved_fds:
                os.close(fd)
            self._saved_fds = []
            self.out.close()
            self.out = sys.stdout


# google.api_core warns, in every process that imports it, that Python 3.10 gets no more updates;
# TFX 1.16 requires 3.10, so the warning says nothing a petpark user can act on.
API_CORE_WARNING = 'ignore:You are using a non-supported Python version:FutureWarning'


def quiet_libraries(numbers_only: bool = False) -> None:
    """Environment that keeps TF's C++ logging, pip's chatter and google.api_core's Python-version
    warning down, in this process and the ones it starts; call before importing TF.
    `numbers_only` (benchmarks): TF's C++ errors too, such as the CUDA factories a CPU build
    registers twice at import."""
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3' if numbers_only else '2')
    os.environ.setdefault('GRPC_VERBOSITY', 'ERROR')
    os.environ.setdefault('PIP_QUIET', '1')
    if API_CORE_WARNING not in os.environ.get('PYTHONWARNINGS', ''):
        os.environ['PYTHONWARNINGS'] = ','.join(filter(None, [os.environ.get('PYTHONWARNINGS'), API_CORE_WARNING]))
    warnings.filterwarnings('ignore', message='You are using a non-supported Python version', category=FutureWarning)
    # pkg_resources, imported by TF's dependencies, on finding the editable checkout on sys.path
    warnings.filterwarnings('ignore', message='Module petpark was already imported', category=UserWarning)
