"""Dynamic batching with TF Serving's BatchingParameters.

Requests for the same (signature, output filter) that arrive within `batch_timeout_micros`
are concatenated along the batch dimension, up to `max_batch_size` rows, padded to the next
`allowed_batch_sizes` entry, run once, and split back. Inputs whose non-batch shapes differ
run in separate batches. More than `max_enqueued_batches` waiting batches: RESOURCE_EXHAUSTED.
"""
import bisect
import collections
import logging
import threading
import time
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import grpc
import numpy as np

from petpark.serving import errors
from petpark.serving.log_limits import RateLimitedLog
from petpark.serving.metrics import ServingMetrics
from petpark.serving.model_store import Servable

DEFAULTS = {'max_batch_size': 1000, 'batch_timeout_micros': 0, 'max_enqueued_batches': 1000,
            'num_batch_threads': 4}
_log = RateLimitedLog(logging.getLogger('petpark.serving.batching'))


class _Task:
    def __init__(self, inputs: Dict[str, np.ndarray], rows: int, enqueued: float):
        self.inputs, self.rows, self.enqueued = inputs, rows, enqueued
        self.done = threading.Event()
        self.outputs: Optional[Dict[str, np.ndarray]] = None
        self.error: Optional[Exception] = None


def _value(params, name: str) -> int:
    field = getattr(params, name)
    return int(field.value) if params.HasField(name) else DEFAULTS[name]


class BatchingServable(Servable):
    """Wraps a loaded servable: `run` goes through a batch queue; everything else is the model's.
    `clock` (seconds, monotonic) times the batch timeout."""

    def __init__(self, inner, params, metrics: ServingMetrics, model_name: str,
                 clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.inner, self.metrics, self.model_name, self.clock = inner, metrics, model_name, clock
        self.max_batch_size = _value(params, 'max_batch_size')
        self.timeout = _value(params, 'batch_timeout_micros') / 1e6
        self.max_enqueued = _value(params, 'max_enqueued_batches')
        self.allowed = sorted(params.allowed_batch_sizes)
        if self.allowed and self.allowed[-1] != self.max_batch_size:
            raise ValueError(f'allowed_batch_sizes must end with max_batch_size ({self.max_batch_size}), '
                             f'got {self.allowed}')
        self._queues: Dict[Tuple, collections.deque] = {}  # only non-empty queues
        self._queued_rows: Dict[Tuple, int] = {}
        self._ready = threading.Condition()
        self._closed = False
        self._threads = [threading.Thread(target=self._work, daemon=True, name=f'batch-{model_name}-{i}')
                         for i in range(_value(params, 'num_batch_threads'))]
        for thread in self._threads:
            thread.start()

    def __getattr__(self, name):  # version, signature_defs, signature(), examples_signature() ...
        return getattr(self.inner, name)

    def run(self, signature_name: Optional[str], inputs: Dict[str, np.ndarray],
            output_filter: Iterable[str] = ()) -> Dict[str, np.ndarray]:
        task = self._enqueue(signature_name, inputs, output_filter)
        if task is None:
            return self.inner.run(signature_name, inputs, output_filter)  # not batchable: run alone
        task.done.wait()
        if task.error is not None:
            raise task.error
        return task.outputs

    def _enqueue(self, signature_name: Optional[str], inputs: Dict[str, np.ndarray],
                 output_filter: Iterable[str]) -> Optional[_Task]:
        """Queues a batchable request; None when it is not (no inputs, scalars, unequal rows)."""
        rows = {len(v) if np.ndim(v) else -1 for v in inputs.values()}
        if len(rows) != 1 or -1 in rows or not inputs:
            return None
        task = _Task(inputs, rows.pop(), self.clock())
        if task.rows > self.max_batch_size:
            raise errors.invalid_argument(f'Task size {task.rows} is larger than maximum input batch size '
                                          f'{self.max_batch_size}')
        key = (signature_name, tuple(output_filter),
               tuple(sorted((alias, np.shape(v)[1:], str(np.asarray(v).dtype)) for alias, v in inputs.items())))
        with self._ready:
            queued = self._queued_rows.get(key, 0)
            if queued + task.rows > self.max_batch_size * self.max_enqueued:
                raise errors.ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                          'The batch scheduling queue to which this task was submitted is full')
            self._queues.setdefault(key, collections.deque()).append(task)
            self._queued_rows[key] = queued + task.rows
            if queued == 0 or (queued + task.rows) // self.max_batch_size > queued // self.max_batch_size:
                self._ready.notify()  # a batch to open, or one more full batch: wake one batch thread
        return task

    def _take_batch(self) -> Optional[Tuple[Tuple, List[_Task]]]:
        """The oldest queue's next batch, once full or `timeout` after its first task; None when closed."""
        with self._ready:
            while not self._closed:
                if not self._queues:
                    self._ready.wait()
                    continue
                key = min(self._queues, key=lambda k: self._queues[k][0].enqueued)
                remaining = self._queues[key][0].enqueued + self.timeout - self.clock()
                if self._queued_rows[key] >= self.max_batch_size or remaining <= 0:
                    batch = self._pop_batch(key)
                    if self._queues:
                        self._ready.notify()  # work is left: another batch thread may take it
                    return key, batch
                self._ready.wait(remaining)
            return None

    def _pop_batch(self, key: Tuple) -> List[_Task]:
        queue, batch, rows = self._queues[key], [], 0
        while queue and rows + queue[0].rows <= self.max_batch_size:
            task = queue.popleft()
            batch.append(task)
            rows += task.rows
        self._queued_rows[key] -= rows
        if not queue:
            del self._queues[key], self._queued_rows[key]
        return batch

    def _work(self) -> None:
        """A batch thread: takes and runs batches until closed. An error outside any batch is logged
        and the thread goes on after a pause (a dead thread would leave its queue waiting forever)."""
        while True:
            try:
                taken = self._take_batch()
            except Exception as e:
                _log.error('batch thread of model %s: %s: %s; it goes on', self.model_name, type(e).__name__, e)
                with self._ready:
                    self._ready.wait(0.1)
                continue
            if taken is None:
                return
            (signature_name, output_filter, _), batch = taken
            self._run_batch(signature_name, output_filter, batch)

    def _run_batch(self, signature_name, output_filter, batch: List[_Task]) -> None:
        """Runs one batch; never raises: every task of the batch gets the outputs or the error."""
        rows = sum(t.rows for t in batch)
        size = self.allowed[bisect.bisect_left(self.allowed, rows)] if self.allowed else rows
        try:
            inputs = {}
            for alias in batch[0].inputs:
                stacked = np.concatenate([np.asarray(t.inputs[alias]) for t in batch])
                if size > rows:  # pad by repeating the last row, as TF Serving's batcher does
                    stacked = np.concatenate([stacked, np.repeat(stacked[-1:], size - rows, axis=0)])
                inputs[alias] = stacked
            outputs = self.inner.run(signature_name, inputs, output_filter)
            if any(np.ndim(v) == 0 or len(v) != size for v in outputs.values()):
                raise errors.ServingError(grpc.StatusCode.INTERNAL, 'Batched outputs do not have the batch dimension')
            start = 0
            for task in batch:
                task.outputs = {alias: value[start:start + task.rows] for alias, value in outputs.items()}
                start += task.rows
            self.metrics.batch(self.model_name, str(self.inner.version), signature_name or 'serving_default', size)
        except Exception as e:  # every task of the batch gets the error
            for task in batch:
                task.error = e
        for task in batch:
            task.done.set()

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()
        for thread in self._threads:
            thread.join()
