"""Model servers the ServingValidator starts: local processes (`petpark serve`,
`tensorflow_model_server`), or TFX's own LocalDockerRunner for the `tensorflow/serving` image.

A local server is a child process that dies with the executor: it is started with the Linux
parent-death signal (SIGKILL), so a killed run (even `kill -9`) leaves no server and no port.
`Stop()` sends SIGTERM, waits, then SIGKILL, and always reaps the process.
"""
import collections
import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import List, Optional

from tfx.components.infra_validator import error_types
from tfx.components.infra_validator.model_server_runners import base_runner

from petpark.components.serving_validator.servers import SERVERS
from petpark.serving.ports import free_port

_PR_SET_PDEATHSIG = 1
_LOG_LINES = 200
_GRPC_LINE = re.compile(r'gRPC \(.*\) at ([\w.:\[\]-]+):(\d+)')


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the parent dies (Linux; elsewhere a no-op)."""
    try:
        ctypes.CDLL('libc.so.6', use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass



class LocalProcessRunner(base_runner.BaseModelServerRunner):
    """Runs a model server command as a child process on the loopback interface.

    `port_from_output`: the server picks its own port (`--port=0`) and prints it, as `petpark
    serve` does; otherwise the port is chosen here and passed in the command.
    """

    def __init__(self, name: str, command: List[str], port: int = 0, port_from_output: bool = False):
        self._name, self._command, self._port = name, command, port
        self._port_from_output = port_from_output
        self._process: Optional[subprocess.Popen] = None
        self._lines = collections.deque(maxlen=_LOG_LINES)
        self._reader: Optional[threading.Thread] = None
        self._ready = threading.Event()

    def __repr__(self) -> str:
        pid = self._process.pid if self._process else None
        return f'{self._name} (pid {pid}, port {self._port or "not yet known"})'

    @property
    def pid(self) -> Optional[int]:
        return self._process.pid if self._process else None

    def GetEndpoint(self) -> str:
        if not self._port:
            raise AssertionError(f'{self._name} is not running yet')
        return f'127.0.0.1:{self._port}'

    def Start(self) -> None:
        if self._process is not None:
            raise AssertionError('Start() called twice')
        self._process = subprocess.Popen(
            self._command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, errors='replace', preexec_fn=_die_with_parent, start_new_session=True)
        self._reader = threading.Thread(target=self._read_output, daemon=True, name=f'{self._name}-output')
        self._reader.start()
        if not self._port_from_output:
            self._ready.set()

    def _read_output(self) -> None:
        for line in self._process.stdout:
            self._lines.append(line.rstrip('\n'))
            found = self._port_from_output and not self._ready.is_set() and _GRPC_LINE.search(line)
            if found:
                self._port = int(found.group(2))
                self._ready.set()

    def WaitUntilRunning(self, deadline: float) -> None:
        while time.time() < deadline:
            if self._process.poll() is not None:
                raise error_types.JobAborted(
                    f'{self._name} exited with code {self._process.returncode} before it served')
            if self._ready.wait(0.2) and self._port_reachable():
                return
        raise error_types.DeadlineExceeded(f'{self._name} did not open its gRPC port in time')

    def _port_reachable(self) -> bool:
        try:
            with socket.create_connection(('127.0.0.1', self._port), timeout=1):
                return True
        except OSError:
            return False

    def exited(self) -> Optional[int]:
        """The exit code once the server has exited, else None."""
        return self._process.poll() if self._process else None

    def Stop(self) -> None:
        if self._process is None:
            return
        if self._process.poll() is None:
            try:
                os.killpg(self._process.pid, signal.SIGTERM)
                self._process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait()
            except ProcessLookupError:
                pass
        self._process.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)

    def GetLogs(self) -> Optional[str]:
        return '\n'.join(self._lines) or None


def make_runner(server: str, model_path: str, model_name: str, binary: str = ''):
    """The runner for `server` (one of SERVERS) serving `model_path`, a TF Serving-flavoured
    `<base>/<model_name>/<version>` folder; `binary`: the server program or image tag."""
    model_base_path = os.path.dirname(model_path)
    if server == 'petpark':
        command = [sys.executable, '-m', 'petpark.pipeline.cli', 'serve', '--port=0', f'--model_name={model_name}',
                   f'--model_base_path={model_base_path}', '--file_system_poll_wait_seconds=0']
        return LocalProcessRunner('petpark serve', command, port_from_output=True)
    if server == 'tensorflow_model_server':
        path = shutil.which(binary or 'tensorflow_model_server')
        if path is None:
            raise error_types.ValidationFailed(
                f'server tensorflow_model_server: {binary or "tensorflow_model_server"} is not on PATH '
                '(install TF Serving, or choose the petpark or docker server)')
        port = free_port()
        command = [path, f'--port={port}', f'--model_name={model_name}', f'--model_base_path={model_base_path}',
                   '--file_system_poll_wait_seconds=0']
        return LocalProcessRunner('tensorflow_model_server', command, port=port)
    if server == 'docker':
        from tfx.components.infra_validator import serving_bins
        from tfx.components.infra_validator.model_server_runners import local_docker_runner
        from tfx.proto import infra_validator_pb2
        spec = infra_validator_pb2.ServingSpec(
            model_name=model_name, tensorflow_serving=infra_validator_pb2.TensorFlowServing(tags=[binary or 'latest']),
            local_docker=infra_validator_pb2.LocalDockerConfig())
        serving_binary = serving_bins.parse_serving_binaries(spec)[0]
        return local_docker_runner.LocalDockerRunner(
            model_path=model_path, serving_binary=serving_binary, serving_spec=spec)
    raise ValueError(f'server must be one of {SERVERS}, got {server!r}')
