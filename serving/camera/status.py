"""The live view: per-camera numbers, shown as a terminal status line and as Prometheus metrics
(`petpark_camera_*`) from the same snapshot, so the two always agree.

Per camera: frames in and classified per second (over the last 5 s), frames skipped (newest won)
and failed (the back-end refused them), decode-to-decision latency p50/p95 (over the last 10 s),
reconnects, the stream's state and the last event.
"""
import bisect
import collections
import sys
import threading
import time
from typing import Callable, Dict, List, Optional, TextIO

RATE_WINDOW = 5.0
LATENCY_WINDOW = 10.0
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def _quantile(values: List[float], q: float) -> Optional[float]:
    if not values:
        return None
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


class CameraStats:
    """One camera's counters and recent timings; every method is thread-safe."""

    def __init__(self, name: str, clock: Callable[[], float] = time.monotonic):
        self.name, self._clock = name, clock
        self._lock = threading.Lock()
        self.started = clock()
        self.counts = collections.Counter()  # received, classified, skipped, failed, reconnects, stream_errors
        self.events: Dict[str, int] = collections.Counter()
        self.present: Dict[str, int] = {}
        self.state, self.connected, self.last_error, self.last_event = 'starting', False, '', ''
        self.model_version: Optional[int] = None
        self._connections = 0
        self._in: collections.deque = collections.deque(maxlen=4096)
        self._done: collections.deque = collections.deque(maxlen=4096)
        self._latencies: collections.deque = collections.deque(maxlen=4096)
        self._buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self._latency_sum = 0.0

    def received(self, at: float, skipped: bool) -> None:
        with self._lock:
            self.counts['received'] += 1
            self.counts['skipped'] += int(skipped)
            self._in.append(at)

    def skipped(self, count: int = 1) -> None:
        with self._lock:
            self.counts['skipped'] += count

    def classified(self, at: float, latency: float, version: Optional[int] = None) -> None:
        with self._lock:
            self.counts['classified'] += 1
            self._done.append(at)
            self._latencies.append((at, latency))
            self._buckets[bisect.bisect_left(LATENCY_BUCKETS, latency)] += 1
            self._latency_sum += latency
            self.model_version = version

    def failed(self, reason: str) -> None:
        with self._lock:
            self.counts['failed'] += 1
            self.last_error = reason

    def connected_now(self, at: float, reconnected: bool = True) -> None:
        with self._lock:
            if self._connections and reconnected:  # (a file played again is not a reconnection)
                self.counts['reconnects'] += 1
            self._connections += 1
            self.state, self.connected = 'streaming', True

    def set_state(self, state: str, connected: bool) -> None:
        with self._lock:
            self.state, self.connected = state, connected

    def stream_error(self, text: str) -> None:
        with self._lock:
            self.counts['stream_errors'] += 1
            self.state, self.connected, self.last_error = f'down ({text})', False, text

    def event(self, kind: str, label: str, text: str) -> None:
        with self._lock:
            if kind == 'start':
                self.events[label] += 1
                self.present[label] = 1
            else:
                self.present[label] = 0
            self.last_event = text

    def snapshot(self) -> dict:
        """Every number the status line and the metrics show, at one instant."""
        now = self._clock()
        with self._lock:
            span = max(min(RATE_WINDOW, now - self.started), 1e-3)
            recent = [latency for at, latency in self._latencies if at >= now - LATENCY_WINDOW]
            return {
                'camera': self.name, 'state': self.state, 'connected': self.connected,
                'counts': dict(self.counts), 'events': dict(self.events), 'present': dict(self.present),
                'fps_in': sum(1 for at in self._in if at >= now - RATE_WINDOW) / span,
                'fps_classified': sum(1 for at in self._done if at >= now - RATE_WINDOW) / span,
                'p50': _quantile(recent, 0.5), 'p95': _quantile(recent, 0.95),
                'buckets': list(self._buckets), 'latency_sum': self._latency_sum,
                'last_event': self.last_event, 'last_error': self.last_error, 'version': self.model_version,
            }


def _ms(seconds: Optional[float]) -> str:
    return '-' if seconds is None else f'{seconds * 1000:.0f} ms'


def status_line(snapshot: dict, width: int = 10) -> str:
    counts = snapshot['counts']
    line = (f"{snapshot['camera']:<{width}} {snapshot['state'][:40]:<12} in {snapshot['fps_in']:5.1f}/s  "
            f"classified {snapshot['fps_classified']:5.1f}/s  skipped {counts.get('skipped', 0)}  "
            f"failed {counts.get('failed', 0)}  p50 {_ms(snapshot['p50'])}  p95 {_ms(snapshot['p95'])}  "
            f"reconnects {counts.get('reconnects', 0)}")
    return line + (f"  last: {snapshot['last_event']}" if snapshot['last_event'] else '')


class Display:
    """The terminal: status lines redrawn in place on a terminal (printed as plain lines elsewhere),
    and other lines (events, warnings) written above them without garbling."""

    def __init__(self, stream: TextIO = None, out: TextIO = None):
        self.stream, self.out = stream or sys.stderr, out or sys.stdout
        self.tty = self.stream.isatty()
        self._lock = threading.Lock()
        self._drawn = 0

    def _erase(self) -> None:
        if self.tty and self._drawn:
            self.stream.write(f'\x1b[{self._drawn}F\x1b[J')
            self._drawn = 0

    def line(self, text: str, to_out: bool = False) -> None:
        with self._lock:
            self._erase()
            self.stream.flush()
            target = self.out if to_out else self.stream
            target.write(text + '\n')
            target.flush()

    def status(self, lines: List[str]) -> None:
        with self._lock:
            self._erase()
            self.stream.write('\n'.join(lines) + '\n')
            self.stream.flush()
            self._drawn = len(lines) if self.tty else 0


class MetricsCollector:
    """prometheus_client collector: the cameras' snapshots and the loop's own numbers, read at
    each scrape (`info()` returns the back-end, model and request-log counts)."""

    def __init__(self, stats: Dict[str, CameraStats], info: Callable[[], dict]):
        self.stats, self.info = stats, info

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
        snapshots = [s.snapshot() for s in self.stats.values()]
        counters = {name: CounterMetricFamily(f'petpark_camera_{name}', text, labels=['camera']) for name, text in (
            ('frames_received', 'frames decoded from the stream'),
            ('frames_classified', 'frames the model decided'),
            ('frames_skipped', 'frames replaced by a newer one before the model took them (newest wins)'),
            ('frames_failed', 'frames the back-end did not answer (server away, refused)'),
            ('reconnects', 'times the stream was opened again after it was lost'),
            ('stream_errors', 'stream failures (each retried)'))}
        events = CounterMetricFamily('petpark_camera_events', 'presences started, by class', labels=['camera', 'class'])
        gauges = {name: GaugeMetricFamily(f'petpark_camera_{name}', text, labels=['camera']) for name, text in (
            ('fps_in', f'frames decoded per second over the last {RATE_WINDOW:g} s'),
            ('fps_classified', f'frames decided per second over the last {RATE_WINDOW:g} s'),
            ('connected', '1 while the stream delivers'))}
        quantiles = GaugeMetricFamily('petpark_camera_latency_seconds', 'decode-to-decision latency over the last '
                                      f'{LATENCY_WINDOW:g} s (as the status line)', labels=['camera', 'quantile'])
        present = GaugeMetricFamily('petpark_camera_present', '1 while a presence of the class is open',
                                    labels=['camera', 'class'])
        histogram = HistogramMetricFamily('petpark_camera_decision_latency_seconds', 'decode-to-decision latency',
                                          labels=['camera'])
        for snap in snapshots:
            camera = snap['camera']
            for name, family in counters.items():
                family.add_metric([camera], snap['counts'].get(name.replace('frames_', ''), 0))
            for label, count in sorted(snap['events'].items()):
                events.add_metric([camera, label], count)
            gauges['fps_in'].add_metric([camera], snap['fps_in'])
            gauges['fps_classified'].add_metric([camera], snap['fps_classified'])
            gauges['connected'].add_metric([camera], int(snap['connected']))
            for q, key in (('0.5', 'p50'), ('0.95', 'p95')):
                if snap[key] is not None:
                    quantiles.add_metric([camera, q], snap[key])
            for label, value in sorted(snap['present'].items()):
                present.add_metric([camera, label], value)
            cumulative, total = [], 0
            for bound, count in zip(list(LATENCY_BUCKETS) + [float('inf')], snap['buckets']):
                total += count
                cumulative.append(('+Inf' if bound == float('inf') else repr(bound), total))
            histogram.add_metric([camera], cumulative, sum_value=snap['latency_sum'])
        yield from counters.values()
        yield from (events, *gauges.values(), quantiles, present, histogram)
        info = self.info()
        model = GaugeMetricFamily('petpark_camera_model_info', 'the model version deciding now',
                                  labels=['backend', 'model_name', 'version'])
        model.add_metric([info['backend'], info['model_name'], str(info.get('version') or '')], 1)
        yield model
        up = GaugeMetricFamily('petpark_camera_backend_up', '1 while the back-end answers')
        up.add_metric([], int(info['backend_up']))
        yield up
        records = CounterMetricFamily('petpark_camera_request_log_records', 'request-log records by status',
                                      labels=['status'])
        for status, count in sorted(info.get('request_log', {}).items()):
            records.add_metric([status], count)
        yield records


def serve_metrics(address: str, collector: MetricsCollector):
    """Starts /metrics at [HOST:]PORT (PORT alone: 127.0.0.1) on its own registry; returns (server, port)."""
    from prometheus_client import CollectorRegistry, start_http_server
    host, _, port = address.rpartition(':')
    registry = CollectorRegistry()
    registry.register(collector)
    server, thread = start_http_server(int(port), addr=host or '127.0.0.1', registry=registry)
    return server, server.server_port
