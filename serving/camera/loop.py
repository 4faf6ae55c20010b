"""`petpark camera`: the wiring. One reader thread per camera fills the FrameHub (newest wins); one
classifier thread takes the newest frame of every camera that has one, decides them in one call of
the back-end (a batch across cameras), and hands each decision to its camera's Debouncer, the
event sink, the request log (sampled) and the stats. A back-end that fails is retried after a
back-off (0.25 s doubling to 5 s) while the readers keep the streams open; nothing a camera, the
back-end or a disk does stops the others. SIGTERM or SIGINT ends open presences ("stopped"),
writes what is queued and exits 0.
"""
import argparse
import collections
import logging
import signal
import sys
import threading
import time
import urllib.parse
from typing import Callable, Dict, List, Optional

from petpark.serving import edge_runtime
from petpark.serving.camera import config as camera_config
from petpark.serving.camera.backends import BackendUnavailable, EdgeBackend, GrpcBackend, Result
from petpark.serving.camera.events import Debouncer, Event, EventSink, clock_time
from petpark.serving.camera.sources import Frame, FrameHub, StreamReader, open_input
from petpark.serving.camera.status import CameraStats, Display, MetricsCollector, serve_metrics, status_line
from petpark.serving.log_limits import RateLimitedLog

_log = logging.getLogger('petpark.serving.camera')
LOG_QUEUE = 64  # frames held for the request log at most (each holds its pixels until written)


class CameraLoop:
    """Readers, the classifier thread, debouncers, sinks; `start`, then `stop` (or wait for `done`:
    every camera's file played out)."""

    def __init__(self, cameras: List[camera_config.CameraSpec], backend, sink: EventSink,
                 request_logger=None, log_sampling: float = 0.0, enter: int = 3, window: int = 5,
                 exit_seconds: float = 1.5, margin: float = 0.5, reconnect_max: float = 2.0, stall_seconds: float = 5.0,
                 display: Optional[Display] = None, opener: Callable = open_input,
                 on_decision: Optional[Callable[[Frame, Result, float], None]] = None,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time):
        self.cameras, self.backend, self.sink, self.display = cameras, backend, sink, display
        self.request_logger, self.log_sampling = request_logger, log_sampling
        self.exit_seconds, self._clock, self._wall, self.on_decision = exit_seconds, clock, wall, on_decision
        self.stats: Dict[str, CameraStats] = {c.name: CameraStats(c.name, clock) for c in cameras}
        self.hub = FrameHub([c.name for c in cameras], self.stats)
        self.stopping = threading.Event()
        self.done = threading.Event()
        self.backend_up = True
        self.events: collections.deque = collections.deque(maxlen=1000)  # the last events emitted
        self.debouncers = {c.name: Debouncer(c.name, enter, window, exit_seconds, margin) for c in cameras}
        self.readers = {c.name: StreamReader(c, self.hub, self.stats[c.name], self.stopping, reconnect_max, stall_seconds,
                                             clock=clock, wall=wall, opener=opener) for c in cameras}
        self._closed: set = set()
        self._last_decided: Dict[str, float] = {}
        self._log = RateLimitedLog(_log, 30.0)
        self._worker = threading.Thread(target=self._classify_forever, name='camera-classifier', daemon=True)
        if request_logger is not None:
            from petpark.serving import request_log
            self._request_log = request_log

    def start(self) -> 'CameraLoop':
        for reader in self.readers.values():
            reader.start()
        self._worker.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stops the readers and the classifier, ends open presences, writes what is queued."""
        self.stopping.set()
        self.hub.wake()
        for reader in self.readers.values():
            reader.join(timeout)
        self._worker.join(timeout)
        for name, debouncer in self.debouncers.items():
            if name not in self._closed:
                for event in debouncer.close('stopped'):
                    self._emit(event)
        self.sink.close(timeout)
        if self.request_logger is not None:
            self.request_logger.close(timeout)
        self.backend.close()

    # -- the classifier thread -------------------------------------------------------------------------
    def _classify_forever(self) -> None:
        delay = 0.25
        while not self.stopping.is_set():
            try:
                frames = self.hub.take(0.25)
                if frames:
                    try:
                        results = self.backend.classify(frames)
                    except BackendUnavailable as e:
                        self.backend_up = False
                        for frame in frames:
                            self.stats[frame.camera].failed(str(e))
                        self._log.warning(f'{e}; retrying in {delay:g} s (back-off up to 5 s), the cameras stay open')
                        self.stopping.wait(delay)
                        delay = min(delay * 2, 5.0)
                        continue
                    self.backend_up, delay = True, 0.25
                    decided = self._clock()
                    for frame, result in zip(frames, results):
                        self._decide(frame, result, decided)
                self._tick({f.camera for f in frames})
            except Exception as e:  # the classifier never dies: a bug or a bad frame costs that batch only
                self._log.error(f'classifier: {type(e).__name__}: {e}')
                self.stopping.wait(0.5)

    def _decide(self, frame: Frame, result: Result, decided: float) -> None:
        stats = self.stats[frame.camera]
        if result.error is not None:
            stats.failed(result.error)
            self._log.warning(result.error)
            return
        info = result.model
        latency = decided - frame.decoded
        stats.classified(decided, latency, info.version)
        self._last_decided[frame.camera] = frame.wall
        scores = result.scores

        def snapshot(label: str, wall: float) -> Optional[str]:
            name = self.sink.snapshot_name(frame.camera, label, wall)
            if name is not None:
                self.sink.snapshot(name, frame.encoded)
            return name
        for event in self.debouncers[frame.camera].update(frame.wall, scores, info.class_names, info.positive,
                                                          info.threshold, info.model_name, info.version, snapshot):
            self._emit(event)
        if self.request_logger is not None:
            self.request_logger.log(info.model_name, self._record(frame, scores.tolist(), info))
        if self.on_decision is not None:
            self.on_decision(frame, result, latency)

    def _record(self, frame: Frame, scores: List[float], info) -> Callable[[], bytes]:
        """The frame's PredictionLog, built later by the request log's writer thread."""
        return lambda: self._request_log.image_prediction_log(info.model_name, info.version, [frame.encoded()], [scores],
                                                              int(frame.wall), frame.camera, self.log_sampling)

    def _tick(self, decided_now: set) -> None:
        """Ends presences of cameras without frames; closes cameras whose file played out."""
        now = self._wall()
        for name, debouncer in self.debouncers.items():
            if name in self._closed or name in decided_now:
                continue
            if self.readers[name].finished.is_set() and not self.hub.pending(name):  # its last frame decided
                for event in debouncer.close('stream ended'):
                    self._emit(event)
                self._closed.add(name)
                continue
            for event in debouncer.tick(now):
                self._emit(event)
        if len(self._closed) == len(self.debouncers):
            self.done.set()

    def _emit(self, event: Event) -> None:
        self.events.append(event)
        self.stats[event.camera].event(event.kind, event.label, event.text())
        self.sink.emit(event)
        if self.display is not None:
            self.display.line(f'{clock_time(self._wall())} {event.camera}: {event.text()}', to_out=True)

    def info(self) -> dict:
        info = self.backend.info
        counts = {}
        if self.request_logger is not None:
            logged, dropped = self.request_logger.counts()
            counts['logged'] = sum(logged.values())
            for (_, reason), count in dropped.items():
                counts[reason] = counts.get(reason, 0) + count
        return {'backend': self.backend.name, 'model_name': info.model_name, 'version': info.version,
                'backend_up': self.backend_up, 'request_log': counts}


def make_backend(args: argparse.Namespace):
    if args.server:
        return GrpcBackend(args.server, args.model, args.label, args.version, args.timeout, args.client_batch,
                           args.model_dir, args.threshold)
    if not args.model_dir:
        raise camera_config.ConfigError('give --model-dir (the edge back-end) or --server HOST:PORT')
    return EdgeBackend(args.model_dir, args.label, args.version, args.int8, args.threads, args.model_poll)


def _check_webhook(url: Optional[str]) -> None:
    if url is None:
        return
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ('http', 'https') or not parsed.hostname:
        raise camera_config.ConfigError(f'--webhook {url!r}: expected an http(s):// URL')


def _metrics_address(text: str) -> str:
    host, _, port = text.rpartition(':')
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise camera_config.ConfigError(f'--metrics-port {text!r}: expected [HOST:]PORT')
    return f'{host or "127.0.0.1"}:{port}'


class _DisplayHandler(logging.Handler):
    def __init__(self, display: Display):
        super().__init__(logging.WARNING)
        self.display = display

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.display.line(f'petpark camera: {record.getMessage()}')
        except Exception:  # a terminal gone away must not stop classification
            pass


def run(args: argparse.Namespace, out=None, err=None) -> int:
    """`petpark camera`: 0 after SIGTERM/SIGINT, --duration, or every file played out; 2 for a bad
    flag, config file, URL or model folder (one line naming it)."""
    out, err = out or sys.stdout, err or sys.stderr
    display = Display(err, out)
    handler = _DisplayHandler(display)
    logger = logging.getLogger('petpark.serving')
    logger.addHandler(handler)
    try:
        return _run(args, display, err)
    finally:
        logger.removeHandler(handler)


def _run(args: argparse.Namespace, display: Display, err) -> int:
    try:
        cameras = camera_config.cameras_of(args)
        _check_webhook(args.webhook)
        address = _metrics_address(args.metrics_port) if args.metrics_port else None
        if not 1 <= args.enter_frames <= args.window:
            raise camera_config.ConfigError(f'--enter-frames {args.enter_frames} must be from 1 to --window '
                                            f'({args.window})')
        backend = make_backend(args)
    except (camera_config.ConfigError, edge_runtime.EdgeError, ValueError) as e:
        print(f'petpark camera: {e}', file=err)
        return 2
    request_logger = None
    if args.log_dir:
        from petpark.serving import request_log
        request_logger = request_log.RequestLogger(
            request_log.RotatingFiles(f'{args.log_dir.rstrip("/")}/{backend.info.model_name}'), args.log_sampling,
            max_queued=LOG_QUEUE)
    loop = CameraLoop(cameras, backend, EventSink(args.events_dir, args.webhook), request_logger, args.log_sampling,
                      args.enter_frames, args.window, args.exit_seconds, args.margin, args.reconnect_max,
                      args.stall_seconds, display)
    metrics = None
    if address:
        try:
            metrics = serve_metrics(address, MetricsCollector(loop.stats, loop.info))
        except (OSError, ImportError, ValueError) as e:
            backend.close()
            print(f'petpark camera: --metrics-port {args.metrics_port}: {e}', file=err)
            return 2
    info = backend.info
    version = info.version if info.version is not None else f'{args.version or args.label} on {args.server}'
    where = f', metrics at http://{address.rpartition(":")[0]}:{metrics[1]}/metrics' if metrics else ''
    display.line(f'petpark camera: {len(cameras)} camera(s), {backend.name} back-end, model {info.model_name} version '
                 f'{version}{where}')
    previous = _stop_on_signals(loop)
    interval = args.status_every if args.status_every is not None else (1.0 if display.tty else 10.0)
    loop.start()
    started = time.monotonic()
    next_status = started + interval if interval > 0 else float('inf')
    try:
        while not loop.stopping.is_set() and not loop.done.wait(0.2):
            now = time.monotonic()
            if args.duration is not None and now - started >= args.duration:
                break
            if now >= next_status:
                display.status([status_line(s.snapshot()) for s in loop.stats.values()])
                next_status = now + interval
    finally:
        loop.stop()
        if metrics is not None:
            metrics[0].shutdown()
            metrics[0].server_close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    display.status([status_line(s.snapshot()) for s in loop.stats.values()])
    return 0


def _stop_on_signals(loop: CameraLoop) -> dict:
    """SIGTERM and SIGINT stop the loop (in the main thread); returns the handlers they had."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def stop(signum, frame):
        loop.stopping.set()
        loop.hub.wake()
    return {signum: signal.signal(signum, stop) for signum in (signal.SIGTERM, signal.SIGINT)}
