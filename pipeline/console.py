"""What a person sees during a run: progress lines (pipeline/progress.py) and a summary.

Quiet mode sends every other byte (TF, absl, Beam, pip and wheel-build subprocesses,
Keras) to a log file by redirecting file descriptors 1 and 2, so nothing is lost and
nothing drowns the progress lines. Verbose mode leaves all output on the terminal.
"""
import os
import sys
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


def quiet_libraries() -> None:
    """Environment that keeps TF's C++ logging and pip's chatter down; call before importing TF."""
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    os.environ.setdefault('GRPC_VERBOSITY', 'ERROR')
    os.environ.setdefault('PIP_QUIET', '1')
