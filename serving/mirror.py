"""Canary mirroring: a sampled share of the requests the `stable` version answers is sent again to
the `canary` version, off the request path; the client gets the stable answer, and both answers are
logged side by side in the request log (request_logging.mirrored_records) for `petpark monitor canary`.

    petpark serve ... --request_logging_config_file=logging.config --canary_mirror_rate=0.2

A request is mirrored when the version that answered it is the one labelled `stable` and a
different version is labelled `canary` (labels in --model_config_file, moved by `petpark promote`).
The request path only draws the sample and queues the request (a bounded queue; a full one drops
the mirror, counted, and the request is logged as usual). One thread hands the queued requests, one
at a time, to a separate process at the lowest CPU priority (serving/mirror_process.py), which runs
the canary on the SavedModel the server serves: a mirrored inference takes only CPU that no stable
request wants, and shares neither the server's TensorFlow thread pools nor its interpreter lock. The
thread never dies of an error (a canary that fails is logged as a failed answer; a process that dies
or hangs is started again, the request counted). For the latency comparison the process also runs
the stable version on every STABLE_TIMED_EVERY-th mirrored request, the two back to back in a random
order, so both versions are timed by the same thread at the same priority (the client's answer and
the logged stable outputs stay those of the request path; the other pairs carry the canary's time
only). Predict requests are mirrored (REST and gRPC); Classify and Regress are not.
"""
import logging
import queue
import random
import threading
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from petpark.serving.log_limits import RateLimitedLog
from petpark.serving.mirror_process import MirrorProcess
from petpark.serving.request_logging import Mirrored, ServingLog

SOURCE_LABEL, TARGET_LABEL = 'stable', 'canary'
STABLE_TIMED_EVERY = 10  # mirrored requests per stable re-run timed beside the canary
_log = RateLimitedLog(logging.getLogger('petpark.serving.mirror'))


class CanaryMirror:
    """Mirrors a share (`rate`) of stable's Predict requests to the canary version."""

    def __init__(self, store, request_logs: ServingLog, rate: float, max_queued: int = 64,
                 random_fraction: Callable[[], float] = random.random, process: Optional[MirrorProcess] = None):
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f'--canary_mirror_rate must be between 0 and 1, got {rate}')
        if rate > 0 and not request_logs.enabled:
            raise ValueError('--canary_mirror_rate: the canary\'s answers are only logged, and request logging is off: '
                             'give --request_logging_config_file as well')
        self.store, self.request_logs, self.rate = store, request_logs, rate
        self._random = random_fraction
        self.process = process or MirrorProcess()
        self._queue: 'queue.Queue' = queue.Queue(maxsize=max_queued)
        self._lock = threading.Lock()
        self._counts: Dict[Tuple[str, str], int] = {}  # (model, outcome) -> requests
        self._handled = 0  # mirrored requests the thread took, to time stable on every STABLE_TIMED_EVERY-th
        self._thread: Optional[threading.Thread] = None
        if rate > 0:
            self._thread = threading.Thread(target=self._run, daemon=True, name='canary-mirror')
            self._thread.start()

    def describe(self) -> str:
        if not self.rate:
            return 'canary mirroring off'
        return (f'canary mirroring: {self.rate:g} of the requests `{SOURCE_LABEL}` answers, to `{TARGET_LABEL}` '
                '(only when both labels name different versions), run in a separate process at the lowest CPU '
                'priority, logged in the request log')

    def _count(self, model: str, outcome: str) -> None:
        with self._lock:
            self._counts[(model, outcome)] = self._counts.get((model, outcome), 0) + 1

    def snapshot(self) -> Dict[Tuple[str, str], int]:
        """Requests by (model, outcome): mirrored, canary_failed, queue_full, not_logged, error."""
        with self._lock:
            return dict(self._counts)

    def offer(self, model: str, version: int, signature: str, inputs: Dict[str, np.ndarray],
              outputs: Dict[str, np.ndarray], micros: int, origin: str = '', output_filter: Sequence[str] = ()) -> bool:
        """On the request path, after stable answered: True when the request was queued for mirroring
        (its records are then the mirror's pair, not the ordinary log's)."""
        if not self.rate:
            return False
        labels = self.store.labels(model)
        stable, canary = labels.get(SOURCE_LABEL), labels.get(TARGET_LABEL)
        if stable != version or canary is None or canary == stable or self._random() >= self.rate:
            return False
        try:
            self._queue.put_nowait((model, version, canary, signature, inputs, outputs, micros, origin,
                                    tuple(output_filter)))
        except queue.Full:
            self._count(model, 'queue_full')
            return False
        return True

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                self.process.stop()
                return
            try:
                self._mirror(*job)
            except Exception as e:  # never dies: the next request is mirrored as usual
                self._count(job[0], 'error')
                _log.error('canary mirror: %s: %s', type(e).__name__, e)

    def _mirror(self, model: str, stable: int, canary: int, signature: str, inputs, outputs, micros: int,
                origin: str, output_filter: Tuple[str, ...]) -> None:
        time_stable = self._handled % STABLE_TIMED_EVERY == 0
        self._handled += 1
        paths = {v: self.store.version_path(model, v) for v in (stable, canary)}
        order = random.sample((stable, canary), 2) if time_stable else (canary,)  # back to back, either order
        runs = self.process.run(model, [(v, paths[v]) for v in order], list(paths.values()), signature, inputs,
                                output_filter)
        timed = {}
        for version, version_outputs, failure, version_micros in runs:
            if failure:  # the canary's failure is part of what is judged
                _log.warning('canary mirror: version %s of %s failed a mirrored request: %s', version, model, failure)
            timed[version] = version_outputs, version_micros
        canary_outputs, canary_micros = timed[canary]
        stable_micros = None
        if time_stable:
            stable_micros = timed[stable][1] if timed[stable][0] is not None else micros
        logged = self.request_logs.mirrored(Mirrored(model, stable, canary, signature, inputs, outputs, canary_outputs,
                                                     stable_micros, canary_micros, origin, output_filter), self.rate)
        self._count(model, ('mirrored' if canary_outputs is not None else 'canary_failed') if logged else 'not_logged')

    def close(self, timeout: float = 10.0) -> None:
        """Mirrors what is queued, then stops the thread and its process (before the request log closes)."""
        if self._thread is None:
            return
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            pass
        self._thread.join(timeout)
