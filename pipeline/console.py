"""What a person sees during a run: one line per component as it starts and finishes.

Quiet mode sends every other byte (TF, absl, Beam, pip and wheel-build subprocesses,
Keras) to a log file by redirecting file descriptors 1 and 2, so nothing is lost and
nothing drowns the progress lines. Verbose mode leaves all output on the terminal.
"""
import logging
import os
import re
import sys
import time
from typing import Dict, Optional, TextIO

from absl import logging as absl_logging

_RUNNING = re.compile(r'^Component (\S+) is running\.$')
_FINISHED = re.compile(r'^Component (\S+) is finished\.$')
_CACHED = re.compile(r'^A cached execution \d+ is used\.$')


class _ProgressHandler(logging.Handler):
    """Turns the local runner's absl messages into progress lines on `out`."""

    def __init__(self, out: TextIO):
        super().__init__(level=logging.INFO)
        self._out = out
        self._started: Dict[str, float] = {}
        self._current: Optional[str] = None
        self._cached = False

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        running, finished = _RUNNING.match(message), _FINISHED.match(message)
        if running:
            self._current, self._cached = running.group(1), False
            self._started[self._current] = time.monotonic()
            self._out.write(f'  > {self._current} ...\n')
        elif finished:
            name = finished.group(1)
            elapsed = time.monotonic() - self._started.pop(name, time.monotonic())
            status = 'cached' if self._cached else 'done'
            self._out.write(f'  + {name:<32} {status:<7}{elapsed:7.1f}s\n')
            self._current = None
        elif _CACHED.match(message):
            self._cached = True
        self._out.flush()

    @property
    def current(self) -> Optional[str]:
        """The component that started and has not finished (the one that failed, on error)."""
        return self._current


class Console:
    """Context manager for a run's output. `out` is the terminal in both modes."""

    def __init__(self, verbose: bool, log_path: str):
        self.verbose = verbose
        self.log_path = log_path
        self.out: TextIO = sys.stdout
        self._saved_fds = []
        self._saved_streams = None
        self._handler: Optional[_ProgressHandler] = None

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
        absl_logging.set_verbosity(absl_logging.INFO)
        self._handler = _ProgressHandler(self.out)
        logging.getLogger('absl').addHandler(self._handler)
        return self

    @property
    def current_component(self) -> Optional[str]:
        return self._handler.current if self._handler else None

    def __exit__(self, *exc) -> None:
        logging.getLogger('absl').removeHandler(self._handler)
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
