"""`petpark monitor --every SECONDS --metrics-port PORT`: a window every SECONDS, its outcome as
Prometheus gauges (serving/deploy/prometheus/rules.yml alerts on them).

Gauges, per model (labels model_name, version: the version of the model's last window; a model's
previous version disappears when a window of a newer one is exported, so a retired version does
not keep an alert firing):

  petpark_monitor_verdict                          0 PASS, 1 BREACH, 2 INCONCLUSIVE
  petpark_monitor_frames                           frames checked in the last window
  petpark_monitor_check_value{check}               each measured check (skew:brightness, drift:..., prediction:...)
  petpark_monitor_check_threshold{check}           ... and its calibrated threshold
  petpark_monitor_estimated_accuracy               the label-free accuracy estimate (when the baseline has slices)
  petpark_monitor_evaluated_accuracy               the Evaluator's accuracy of the version, beside it
  petpark_monitor_window_end_timestamp_seconds     where the last window ended (epoch seconds)

and of the loop (label model_name):

  petpark_monitor_last_success_timestamp_seconds   when a window last completed
  petpark_monitor_consecutive_failures             windows failed since the last success
  petpark_monitor_interval_seconds                 SECONDS of --every
  petpark_monitor_runs_total{outcome}              windows run: ok / error

The loop (`Schedule`) never dies of an exception: a failed window is logged (with its traceback
the first time an error is seen) and retried with exponential backoff: 5 s, 10 s, 20 s, ... up to
the schedule's SECONDS, so a passing blip costs seconds, not a window, and a broken dependency is
not tried more often than windows run. Windows are contiguous: the next starts where the last
checked one ended, so frames served during failures are checked once it recovers (at most
MAX_CATCH_UP windows back, so a window that cannot succeed is eventually left behind). SIGTERM or
SIGINT stops the loop after the current window; a second one acts as usual.
"""
import http.server
import signal
import sys
import threading
import time
import traceback
from typing import Any, Callable, Dict, Optional, Tuple

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8'
VERDICTS = {'PASS': 0, 'BREACH': 1, 'INCONCLUSIVE': 2}
CHECK_KINDS = ('skew', 'drift', 'prediction')  # document['numbers'][kind] = {feature: {value, threshold, breach}}
FIRST_RETRY_SECONDS = 5.0
MAX_CATCH_UP = 10  # a window after failures spans at most this many scheduled windows
_WINDOW = ('model_name', 'version')


def window_numbers(document: Dict[str, Any]) -> Dict[str, Any]:
    """What the gauges show of a run_window document."""
    numbers = document.get('numbers') or {}
    checks = {}
    for kind in CHECK_KINDS:
        for name, entry in sorted((numbers.get(kind) or {}).items()):
            if isinstance(entry, dict) and (entry.get('value') is not None or entry.get('threshold') is not None):
                checks[f'{kind}:{name}'] = (entry.get('value'), entry.get('threshold'))
    estimate = numbers.get('estimate') or {}
    return {'verdict': VERDICTS[document['verdict']], 'frames': int(document.get('frames') or 0), 'checks': checks,
            'estimated_accuracy': estimate.get('accuracy'), 'evaluated_accuracy': estimate.get('evaluated_accuracy'),
            'window_end': document.get('end')}


class MonitorExporter:
    """The gauges of the last window per model, and the loop's own; a prometheus_client collector."""

    def __init__(self, interval_seconds: Optional[float] = None):
        self.interval_seconds = interval_seconds
        self._lock = threading.Lock()
        self._windows: Dict[str, Tuple[str, Dict[str, Any]]] = {}  # model -> (version, window_numbers)
        self._loop: Dict[str, Dict[str, float]] = {}  # model -> {last_success, failures, ok, error}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def _state(self, model: str) -> Dict[str, float]:
        return self._loop.setdefault(model, {'last_success': None, 'failures': 0, 'ok': 0, 'error': 0})

    def update(self, document: Dict[str, Any], at: float) -> None:
        """A completed window (run_window's document) at time `at`."""
        found = window_numbers(document)
        model = document['model_name']
        with self._lock:
            self._windows[model] = (str(document['version']), found)
            state = self._state(model)
            state['last_success'], state['failures'] = at, 0
            state['ok'] += 1

    def failed(self, model: str) -> None:
        """A window of `model` that raised."""
        with self._lock:
            state = self._state(model)
            state['failures'] += 1
            state['error'] += 1

    def collect(self):
        with self._lock:
            windows = dict(self._windows)
            loop = {model: dict(state) for model, state in self._loop.items()}

        def gauge(name, documentation, labels=_WINDOW):
            return GaugeMetricFamily(name, documentation, labels=list(labels))
        verdict = gauge('petpark_monitor_verdict', "The last window's verdict: 0 PASS, 1 BREACH, 2 INCONCLUSIVE.")
        frames = gauge('petpark_monitor_frames', 'Frames checked in the last window.')
        value = gauge('petpark_monitor_check_value', "Each check's measurement in the last window.",
                      _WINDOW + ('check',))
        threshold = gauge('petpark_monitor_check_threshold', "Each check's calibrated threshold for that window.",
                          _WINDOW + ('check',))
        estimated = gauge('petpark_monitor_estimated_accuracy', "The last window's label-free accuracy estimate.")
        evaluated = gauge('petpark_monitor_evaluated_accuracy', "The Evaluator's accuracy of the version.")
        window_end = gauge('petpark_monitor_window_end_timestamp_seconds', 'Where the last window ended.')
        for model, (version, found) in sorted(windows.items()):
            labels = [model, version]
            verdict.add_metric(labels, found['verdict'])
            frames.add_metric(labels, found['frames'])
            for check, (measured, bound) in found['checks'].items():
                if measured is not None:
                    value.add_metric(labels + [check], float(measured))
                if bound is not None:
                    threshold.add_metric(labels + [check], float(bound))
            if found['estimated_accuracy'] is not None:
                estimated.add_metric(labels, float(found['estimated_accuracy']))
            if found['evaluated_accuracy'] is not None:
                evaluated.add_metric(labels, float(found['evaluated_accuracy']))
            if found['window_end'] is not None:
                window_end.add_metric(labels, float(found['window_end']))
        yield from (verdict, frames, value, threshold, estimated, evaluated, window_end)
        success = gauge('petpark_monitor_last_success_timestamp_seconds', 'When a window last completed.',
                        ('model_name',))
        failures = gauge('petpark_monitor_consecutive_failures', 'Windows failed since the last success.',
                         ('model_name',))
        interval = gauge('petpark_monitor_interval_seconds', 'The schedule: a window every this many seconds.',
                         ('model_name',))
        runs = CounterMetricFamily('petpark_monitor_runs', 'Windows run, by outcome.', labels=['model_name', 'outcome'])
        for model, state in sorted(loop.items()):
            if state['last_success'] is not None:
                success.add_metric([model], state['last_success'])
            failures.add_metric([model], state['failures'])
            if self.interval_seconds is not None:
                interval.add_metric([model], float(self.interval_seconds))
            runs.add_metric([model, 'ok'], state['ok'])
            runs.add_metric([model, 'error'], state['error'])
        yield from (success, failures, interval, runs)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def parse_address(text: str) -> Tuple[str, int]:
    """`PORT` (loopback, as `petpark serve` binds) or `HOST:PORT` (0.0.0.0:PORT for a Prometheus
    on another machine)."""
    host, _, port = text.rpartition(':')
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f'expected PORT or HOST:PORT, got {text!r}') from None
    if not 0 <= number <= 65535:
        raise ValueError(f'port must be 0..65535, got {number}')
    return (host.strip('[]') or '127.0.0.1'), number


class QuietHTTPServer(http.server.ThreadingHTTPServer):
    """A threading HTTP server that does not print a traceback for a client that hung up."""

    daemon_threads = True

    def handle_error(self, request, client_address):
        """A scraper that gave up (its scrape timeout) is not an error worth a traceback."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class MetricsServer:
    """/metrics of an exporter over HTTP, in a daemon thread; `port` is the bound port."""

    def __init__(self, exporter: MonitorExporter, port: int, host: str = '127.0.0.1'):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                if self.path.split('?')[0] not in ('/metrics', '/'):
                    self.send_error(404, 'only /metrics is served')
                    return
                body = exporter.exposition()
                self.send_response(200)
                self.send_header('Content-Type', CONTENT_TYPE)
                self.send_header('Content-Length', str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # scrapes are not news
                pass
        self._server = QuietHTTPServer((host, port), Handler)
        self.host, self.port = host, self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name='monitor-metrics', daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


def serve(port: int, exporter: Optional[MonitorExporter] = None, host: str = '127.0.0.1') -> MetricsServer:
    """Exposes `exporter` (a new one when None) at http://host:port/metrics."""
    return MetricsServer(exporter or MonitorExporter(), port, host)


class Schedule:
    """Runs `run(since, until)` every `every` seconds until `stop` is set; never dies of an exception.

    `clock` gives epoch seconds; `wait(seconds)` waits (returning early when stopped): both are
    injected by tests."""

    def __init__(self, every: float, run: Callable[[int, int], Dict[str, Any]], model: str,
                 exporter: Optional[MonitorExporter] = None, log: Callable[[str], None] = print,
                 clock: Callable[[], float] = time.time, stop: Optional[threading.Event] = None,
                 wait: Optional[Callable[[float], Any]] = None, settled: Callable[[float], float] = lambda now: now):
        if not every > 0:
            raise ValueError(f'--every must be more than 0 seconds, got {every:g}')
        self.every, self.run_window, self.model, self.settled = every, run, model, settled
        self.exporter, self.log, self.clock = exporter, log, clock
        self.stop = stop or threading.Event()
        self._wait = wait or self.stop.wait
        self.covered_until: Optional[int] = None  # end of the last window checked
        self.failures = 0
        self._last_error: Optional[str] = None

    def window(self, now: float) -> Tuple[int, int]:
        """[since, until): from where the last checked window ended (the first: `every` back), at
        most MAX_CATCH_UP windows back, up to the time `settled` says every record is in a finished
        log file (a record still in a file being written is checked by the next window)."""
        until = int(min(now, self.settled(now)))
        if self.covered_until is None:
            self.covered_until = until - int(self.every)
        return max(self.covered_until, until - int(self.every * MAX_CATCH_UP)), until

    def once(self) -> float:
        """Runs one window; returns the seconds to wait before the next."""
        started = self.clock()
        since, until = self.window(started)
        try:
            document = self.run_window(since, until)
        except Exception as e:  # whatever a window raises, the schedule goes on
            self.failures += 1
            if self.exporter is not None:
                self.exporter.failed(self.model)
            delay = min(self.every, FIRST_RETRY_SECONDS * 2 ** (self.failures - 1))
            said = f'{type(e).__name__}: {e}'
            self._say(f'window {since}..{until} failed ({self.failures} in a row): {said}; retrying in {delay:g} s')
            if said != self._last_error:  # the traceback once per new error, not every retry
                self._say(''.join(traceback.format_exception(type(e), e, e.__traceback__)).rstrip())
                self._last_error = said
            return delay
        self.failures, self.covered_until, self._last_error = 0, until, None
        if self.exporter is not None:
            try:
                self.exporter.update(document, self.clock())
            except Exception as e:  # a document the gauges cannot read: the window itself is done
                self._say(f'window {since}..{until}: gauges not updated: {type(e).__name__}: {e}')
        # the next slot of the schedule, skipping those a long window overran (the next window covers them)
        return self.every - (self.clock() - started) % self.every

    def _say(self, line: str) -> None:
        try:
            self.log(line)
        except Exception:  # a closed terminal does not end the schedule
            pass

    def run(self) -> int:
        """Until stopped; returns the number of windows attempted."""
        attempts = 0
        while not self.stop.is_set():
            attempts += 1
            delay = self.once()
            if self.stop.is_set():
                break
            self._wait(delay)
        return attempts


def stop_on_signals(stop: threading.Event, log: Callable[[str], None] = print) -> Callable[[], None]:
    """SIGTERM/SIGINT set `stop` (the current window finishes); a second signal acts as usual.
    Returns a function restoring the previous handlers. Main thread only."""
    previous = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for number, handler in previous.items():
            signal.signal(number, handler)

    def handle(number, frame) -> None:
        log(f'{signal.Signals(number).name}: stopping after the current window')
        stop.set()
        restore()
    for number in previous:
        signal.signal(number, handle)
    return restore


def run_schedule(settings, every: float, metrics_address: Optional[str], version: Optional[str],
                 log: Callable[[str], None] = print) -> int:
    """`petpark monitor --every`: a window over the last `every` seconds, every `every` seconds, its
    gauges at `metrics_address` (PORT or HOST:PORT; None: none), until SIGTERM/SIGINT. Exit status 0."""
    if not every > 0:
        raise ValueError(f'--every must be more than 0 seconds, got {every:g}')
    address = parse_address(metrics_address) if metrics_address else None
    from petpark.monitoring import logs, monitor  # TFDV and TensorFlow
    exporter = MonitorExporter(every)
    server = None
    if address:
        server = serve(address[1], exporter, address[0])
    if server is not None:
        log(f'monitor gauges at http://{server.host}:{server.port}/metrics')
    stop = threading.Event()
    restore = stop_on_signals(stop, log)

    def run(since: int, until: int) -> Dict[str, Any]:
        return monitor.run_window(settings, monitor.WindowSpec(since=since, until=until, version=version), log)
    try:
        attempts = Schedule(every, run, settings.model_name, exporter, log, stop=stop,
                            settled=lambda now: logs.complete_until(settings.request_log_dir, now)).run()
    finally:
        restore()
        if server is not None:
            server.stop()
    log(f'stopped after {attempts} window(s)')
    return 0
