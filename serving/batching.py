"""Dynamic batching with TF Serving's BatchingParameters.

Requests for the same (signature, output filter) that arrive within `batch_timeout_micros`
are concatenated along the batch dimension, up to `max_batch_size` rows, padded to the next
`allowed_batch_sizes` entry, run once, and split back. Inputs whose non-batch shapes differ
run in separate batches. More than `max_enqueued_batches` waiting batches: RESOURCE_EXHAUSTED.
"""
import bisect
import collections
import threading
import time
from typing import Dict, Iterable, List, Optional, Tuple

import grpc
import numpy as np

from serving import errors
from serving.metrics import ServingMetrics
from serving.model_store import Servable

DEFAULTS = {'max_batch_size': 1000, 'batch_timeout_micros': 0, 'max_enqueued_batches': 1000,
            'num_batch_threads': 4}


class _Task:
    def __init__(self, inputs: Dict[str, np.ndarray], rows: int):
        self.inputs, self.rows = inputs, rows
        self.done = threading.Event()
        self.outputs: Optional[Dict[str, np.ndarray]] = None
        self.error: Optional[Exception] = None


def _value(params, name: str) -> int:
    field = getattr(params, name)
    return int(field.value) if params.HasField(name) else DEFAULTS[name]


class BatchingServable(Servable):
    """Wraps a loaded servable: `run` goes through a batch queue; everything else is the model's."""

    def __init__(self, inner, params, metrics: ServingMetrics, model_name: str):
        super().__init__()
        self.inner, self.metrics, self.model_name = inner, metrics, model_name
        self.max_batch_size = _value(params, 'max_batch_size')
        self.timeout = _value(params, 'batch_timeout_micros') / 1e6
        self.max_enqueued = _value(params, 'max_enqueued_batches')
        self.allowed = sorted(params.allowed_batch_sizes)
        if self.allowed and self.allowed[-1] != self.max_batch_size:
            raise ValueError(f'allowed_batch_sizes must end with max_batch_size ({self.max_batch_size}), '
                             f'got {self.allowed}')
        self._queues: Dict[Tuple, collections.deque] = collections.defaultdict(collections.deque)
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
        rows = {len(v) if np.ndim(v) else -1 for v in inputs.values()}
        if len(rows) != 1 or -1 in rows or not inputs:
            return self.inner.run(signature_name, inputs, output_filter)  # not batchable: run alone
        task = _Task(inputs, rows.pop())
        if task.rows > self.max_batch_size:
            raise errors.invalid_argument(f'Task size {task.rows} is larger than maximum input batch size '
                                          f'{self.max_batch_size}')
        key = (signature_name, tuple(output_filter),
               tuple(sorted((alias, np.shape(v)[1:], str(np.asarray(v).dtype)) for alias, v in inputs.items())))
        with self._ready:
            queued_rows = sum(t.rows for t in self._queues[key])
            if queued_rows + task.rows > self.max_batch_size * self.max_enqueued:
                raise errors.ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                          'The batch scheduling queue to which this task was submitted is full')
            self._queues[key].append(task)
            self._ready.notify()
        task.done.wait()
        if task.error is not None:
            raise task.error
        return task.outputs

    def _take_batch(self) -> Optional[Tuple[Tuple, List[_Task]]]:
        """Waits for work, then up to `timeout` for the oldest queue to fill; None when closed."""
        with self._ready:
            while not self._closed and not any(self._queues.values()):
                self._ready.wait()
            if self._closed:
                return None
            key = next(k for k, q in self._queues.items() if q)
            deadline = time.monotonic() + self.timeout
            while sum(t.rows for t in self._queues[key]) < self.max_batch_size and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._ready.wait(remaining)
            queue, batch, rows = self._queues[key], [], 0
            while queue and rows + queue[0].rows <= self.max_batch_size:
                task = queue.popleft()
                batch.append(task)
                rows += task.rows
            return (key, batch) if batch else None

    def _work(self) -> None:
        while True:
            taken = self._take_batch()
            if taken is None:
                if self._closed:
                    return
                continue
            (signature_name, output_filter, _), batch = taken
            self._run_batch(signature_name, output_filter, batch)

    def _run_batch(self, signature_name, output_filter, batch: List[_Task]) -> None:
        rows = sum(t.rows for t in batch)
        size = self.allowed[bisect.bisect_left(self.allowed, rows)] if self.allowed else rows
        inputs = {}
        for alias in batch[0].inputs:
            stacked = np.concatenate([np.asarray(t.inputs[alias]) for t in batch])
            if size > rows:  # pad by repeating the last row, as TF Serving's batcher does
                stacked = np.concatenate([stacked, np.repeat(stacked[-1:], size - rows, axis=0)])
            inputs[alias] = stacked
        try:
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
