"""The process the canary mirror runs models in, at the lowest CPU priority (SCHED_IDLE, or nice 19
where the scheduler refuses it): mirrored inferences only take CPU no stable request wants, and share
neither the server's TensorFlow thread pools nor its interpreter lock (serving/mirror.py).

The server's mirror thread sends one request at a time over a pipe: the (version, SavedModel path)
pairs to run in order, the paths to keep loaded (stable's and the canary's), the signature, the
inputs and the output filter; the process answers with each version's outputs (None and the reason
when the version failed) and the microseconds its call took. It loads each path once and unloads
those no longer kept. It exits when told to, or when the server is gone (its end of the pipe closes).
"""
import multiprocessing
import os
import signal
import time
from typing import Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

Run = Tuple[int, Optional[Dict[str, np.ndarray]], str, int]  # version, outputs or None, why it failed, micros


def lowest_priority() -> str:
    """Every thread of this process (and the threads they start) at the lowest CPU priority; its name."""
    for task in os.listdir('/proc/self/task') if os.path.isdir('/proc/self/task') else ['0']:
        try:
            os.sched_setscheduler(int(task), os.SCHED_IDLE, os.sched_param(0))
            policy = 'SCHED_IDLE'
        except (AttributeError, OSError):
            os.setpriority(os.PRIO_PROCESS, int(task), 19)
            policy = 'nice 19'
    return policy


def serve(connection, intra_op: int, inter_op: int) -> None:
    """The process's loop: requests from `connection` until None or the server goes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C reaches the server, which stops this process
    connection.send(lowest_priority())
    from petpark.pipeline import console
    console.quiet_libraries(numbers_only=True)
    import tensorflow as tf
    from petpark.serving import tf_servable
    if intra_op:
        tf.config.threading.set_intra_op_parallelism_threads(intra_op)
    if inter_op:
        tf.config.threading.set_inter_op_parallelism_threads(inter_op)
    loaded: Dict[str, object] = {}
    while True:
        try:
            request = connection.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        model, versions, keep, signature, inputs, output_filter = request
        for path in set(loaded) - set(keep):
            loaded.pop(path).close()
        answers: List[Run] = []
        for version, path in versions:
            try:
                if path not in loaded:
                    loaded[path] = tf_servable.load(model, path, version)
                    lowest_priority()  # threads TensorFlow started while loading
                start = time.perf_counter()
                outputs = loaded[path].run(signature, inputs, list(output_filter))
                answers.append((version, outputs, '', int((time.perf_counter() - start) * 1e6)))
            except Exception as e:  # the version's failure is part of what is judged
                answers.append((version, None, f'{type(e).__name__}: {getattr(e, "message", e)}', 0))
        connection.send(answers)


class MirrorProcess:
    """The server's handle on that process: started on first use, started again after it died or
    did not answer in time (`run_timeout`, or `load_timeout` when a version must load first)."""

    def __init__(self, intra_op: int = 0, inter_op: int = 0, run_timeout: float = 60.0, load_timeout: float = 300.0):
        self._threads = (intra_op, inter_op)
        self.run_timeout, self.load_timeout = run_timeout, load_timeout
        self.priority = ''  # the scheduling the process got: SCHED_IDLE or nice 19
        self._process = self._connection = None
        self._loaded: Set[str] = set()  # the paths the process holds

    @property
    def pid(self) -> Optional[int]:
        return self._process.pid if self._process is not None else None

    def _start(self) -> None:
        context = multiprocessing.get_context('spawn')  # a forked copy of a TensorFlow process is not safe
        self._connection, child = context.Pipe()
        self._process = context.Process(target=serve, args=(child, *self._threads), daemon=True,
                                        name='petpark-canary-mirror')
        self._process.start()
        child.close()
        self.priority = self._receive(self.load_timeout)

    def _receive(self, timeout: float):
        if not self._connection.poll(timeout):
            raise TimeoutError(f'the mirror process did not answer within {timeout:g} s; it is started again')
        return self._connection.recv()

    def run(self, model: str, versions: Sequence[Tuple[int, str]], keep: Sequence[str], signature: str,
            inputs: Dict[str, np.ndarray], output_filter: Sequence[str]) -> List[Run]:
        """Each (version, path) run on the inputs in order, the `keep` paths kept loaded and no
        other; raises (and stops the process, to be started again next time) when it died or did
        not answer in time."""
        try:
            if self._process is None:
                self._start()
            paths = {path for _, path in versions}
            timeout = self.run_timeout if paths <= self._loaded else self.load_timeout
            self._connection.send((model, list(versions), list(keep), signature, inputs, tuple(output_filter)))
            self._loaded = (self._loaded | paths) & set(keep)
            return self._receive(timeout)
        except BaseException:
            self.stop(0)
            raise

    def stop(self, timeout: float = 10.0) -> None:
        process, connection, self._process, self._connection = self._process, self._connection, None, None
        self._loaded = set()
        if process is None:
            return
        try:
            connection.send(None)
        except (OSError, ValueError):
            pass
        process.join(timeout)
        if process.is_alive():
            process.kill()
            process.join()
        connection.close()
