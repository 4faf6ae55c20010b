"""Prometheus metrics under TF Serving's names, so its dashboards work unchanged.

  :tensorflow:serving:request_count{model_name,version,API,entrypoint,status}   counter
  :tensorflow:serving:request_latency{model_name,version,API,entrypoint}         histogram (µs)
  :tensorflow:serving:batch_size{model_name,version,signature}                    histogram (when batching)
  :tensorflow:serving:request_example_counts{model_name}                          histogram (rows per request)
  :tensorflow:serving:request_log_count{model_name,status}                        counter (OK, or a drop reason)
  :petpark:serving:camera_requests{model_name,camera}                             counter (requests naming a camera)

prometheus_client writes the histograms; the counter is written as TF Serving writes it
(prometheus_client would rename it `..._total`, which TF Serving dashboards do not query).
"""
import bisect
import threading
import time
from contextlib import contextmanager
from typing import Dict, Iterator, List, Tuple

import numpy as np
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import HistogramMetricFamily

CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8'
REQUEST_LABELS = ('model_name', 'version', 'API', 'entrypoint')
LATENCY_BUCKETS_MICROS = [10 * 1.8 ** i for i in range(33)]  # 10 µs .. ~2.8 h, like TF Serving's exponential buckets
BATCH_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]


class _Histogram:
    def __init__(self, bounds: List[float]):
        self.bounds = bounds
        self.counts: Dict[Tuple[str, ...], List[int]] = {}
        self.sums: Dict[Tuple[str, ...], float] = {}

    def observe(self, labels: Tuple[str, ...], value: float) -> None:
        counts = self.counts.setdefault(labels, [0] * (len(self.bounds) + 1))
        counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sums[labels] = self.sums.get(labels, 0.0) + value

    def family(self, name: str, documentation: str, label_names) -> HistogramMetricFamily:
        family = HistogramMetricFamily(name, documentation, labels=list(label_names))
        for labels, counts in self.counts.items():
            cumulative, buckets = 0, []
            for bound, count in zip(self.bounds + [float('inf')], counts):
                cumulative += count
                buckets.append(('+Inf' if bound == float('inf') else f'{bound:g}', cumulative))
            family.add_metric(list(labels), buckets, self.sums[labels])
        return family


class ServingMetrics:
    """Thread-safe request, latency and batch-size metrics; `exposition()` is the scrape body."""

    def __init__(self):
        self._lock = threading.Lock()
        self._requests: Dict[Tuple[str, ...], int] = {}
        self._latency = _Histogram(LATENCY_BUCKETS_MICROS)
        self._batches = _Histogram([float(b) for b in BATCH_BUCKETS])
        self._examples = _Histogram([float(b) for b in BATCH_BUCKETS])
        self._cameras: Dict[Tuple[str, str], int] = {}
        self.request_log_counts = None  # () -> (logged by model, dropped by (model, reason)), when logging
        self.mirror_counts = None  # () -> {(model, outcome): requests}, when mirroring to a canary
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    @contextmanager
    def request(self, model: str, api: str, entrypoint: str) -> Iterator[dict]:
        """Times one request; the handler sets ['version'] once resolved. Errors count by code."""
        labels = {'version': '', 'status': 'OK'}
        start = time.perf_counter()
        try:
            yield labels
        except Exception as e:
            code = getattr(e, 'code', None)
            labels['status'] = code.name if code is not None else 'UNKNOWN'
            raise
        finally:
            key = (model, labels['version'], api, entrypoint)
            with self._lock:
                self._requests[key + (labels['status'],)] = self._requests.get(key + (labels['status'],), 0) + 1
                self._latency.observe(key, (time.perf_counter() - start) * 1e6)

    def served(self, model: str, rows: int, camera: str = '') -> None:
        """A request that was answered: its number of rows (examples), and the camera it named."""
        with self._lock:
            self._examples.observe((model,), float(rows))
            if camera:
                self._cameras[(model, camera)] = self._cameras.get((model, camera), 0) + 1

    def batch(self, model: str, version: str, signature: str, size: int) -> None:
        with self._lock:
            self._batches.observe((model, version, signature), float(size))

    def collect(self):
        with self._lock:
            yield self._latency.family(':tensorflow:serving:request_latency',
                                       'Request latency in microseconds.', REQUEST_LABELS)
            yield self._batches.family(':tensorflow:serving:batch_size', 'Sizes of the batches run.',
                                       ('model_name', 'version', 'signature'))
            yield self._examples.family(':tensorflow:serving:request_example_counts',
                                        'Examples (rows) per request.', ('model_name',))

    def exposition(self) -> bytes:
        with self._lock:
            requests = sorted(self._requests.items())
            cameras = sorted(self._cameras.items())
        lines = ['# HELP :tensorflow:serving:request_count Total requests, by outcome.',
                 '# TYPE :tensorflow:serving:request_count counter']
        for labels, value in requests:
            lines.append(_line(':tensorflow:serving:request_count', REQUEST_LABELS + ('status',), labels, value))
        if self.request_log_counts is not None:
            logged, dropped = self.request_log_counts()
            lines += ['# HELP :tensorflow:serving:request_log_count Request-log records, written (OK) or dropped.',
                      '# TYPE :tensorflow:serving:request_log_count counter']
            lines += [_line(':tensorflow:serving:request_log_count', ('model_name', 'status'), (model, 'OK'), count)
                      for model, count in sorted(logged.items())]
            lines += [_line(':tensorflow:serving:request_log_count', ('model_name', 'status'), key, count)
                      for key, count in sorted(dropped.items())]
        lines += ['# HELP :petpark:serving:camera_requests Requests naming a camera (x-petpark-camera).',
                  '# TYPE :petpark:serving:camera_requests counter']
        lines += [_line(':petpark:serving:camera_requests', ('model_name', 'camera'), key, count) for key, count in cameras]
        if self.mirror_counts is not None:
            mirrored = sorted(self.mirror_counts().items())
            lines += ['# HELP :petpark:serving:canary_mirror_count Requests mirrored to the canary version, by outcome.',
                      '# TYPE :petpark:serving:canary_mirror_count counter']
            lines += [_line(':petpark:serving:canary_mirror_count', ('model_name', 'outcome'), key, count)
                      for key, count in mirrored]
        return ('\n'.join(lines) + '\n').encode() + generate_latest(self.registry)


def rows_of(inputs) -> int:
    """Rows in a request: the first dimension of its inputs (1 for scalars)."""
    shapes = [np.shape(value) for value in inputs.values()]
    return max((shape[0] for shape in shapes if shape), default=1)


def _line(name: str, label_names, labels, value) -> str:
    pairs = ','.join(f'{label_name}="{_escape(label)}"' for label_name, label in zip(label_names, labels))
    return f'{name}{{{pairs}}} {value}'


def _escape(value: str) -> str:
    return value.replace('\\', '\\\\').replace('"', '\\"').replace('\n', '\\n')
