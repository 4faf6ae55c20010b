"""Camera streams to decoded frames, one reader thread per camera, through PyAV (FFmpeg): RTSP
(over TCP), HTTP MJPEG and HLS, a V4L2 device, or a video file played at its own frame rate.

Bounded lag: a reader puts each decoded frame in its camera's one-frame slot of the FrameHub; a
frame replaced there before the classifier took it is skipped and counted (newest wins), so nothing
queues behind a slow model. A stream that fails, ends or stalls (no frame for `stall_seconds`,
or a read blocked that long) is opened again after a back-off (0.25 s doubling to `reconnect_max`,
reset by the next frame); a reader never dies of its own errors.
"""
import io
import logging
import threading
import time
from typing import Callable, Dict, List, Optional

import numpy as np
from PIL import Image

from petpark.serving import edge_runtime
from petpark.serving.camera.config import CameraSpec, file_path
from petpark.serving.camera.status import CameraStats
from petpark.serving.log_limits import RateLimitedLog

_log = logging.getLogger('petpark.serving.camera')
JPEG_QUALITY = 90  # as the edge runtime encodes a logged video frame


class SourceError(Exception):
    """A stream that cannot be read now (it is retried)."""


class Frame:
    """One frame: its camera, number since the reader started, the times it was read (monotonic for
    latency, wall clock for events and logs), and its pixels, converted to RGB once when asked for.
    MJPEG frames keep the stream's own JPEG (sent to a server and logged as it came) and are decoded
    (Pillow, as the edge runtime decodes photos) only when asked for: at 30 fps most are skipped."""

    __slots__ = ('camera', 'index', 'decoded', 'wall', 'jpeg', '_video', '_rgb', '_lock', '_prepared')

    def __init__(self, camera: str, index: int, decoded: float, wall: float, video=None,
                 rgb: Optional[np.ndarray] = None, jpeg: Optional[bytes] = None):
        self.camera, self.index, self.decoded, self.wall, self.jpeg = camera, index, decoded, wall, jpeg
        self._video, self._rgb, self._lock = video, rgb, threading.RLock()
        self._prepared: Dict = {}

    def prepared(self, key, make: Callable):
        """`make()`'s value, computed once per key (the JPEG a request and the request log share; a
        back-end's preprocessing); a second caller waits for the first's result."""
        with self._lock:
            if key not in self._prepared:
                self._prepared[key] = make()
            return self._prepared[key]

    def rgb(self) -> np.ndarray:
        with self._lock:
            if self._rgb is None and self._video is not None:
                self._rgb, self._video = self._video.to_ndarray(format='rgb24'), None
            elif self._rgb is None:  # an MJPEG frame, not decoded yet: checked against the pixel bound first
                with Image.open(io.BytesIO(self.jpeg)) as image:
                    too_large = edge_runtime.pixel_limit_error(f'camera {self.camera}', 'the frame', *image.size)
                    if too_large:
                        raise too_large
                    self._rgb = np.asarray(image.convert('RGB'))
            return self._rgb

    def encoded(self) -> bytes:
        """JPEG bytes: the stream's own, else the pixels encoded (quality 90), once."""
        if self.jpeg is not None:
            return self.jpeg

        def encode() -> bytes:
            buffer = io.BytesIO()
            Image.fromarray(self.rgb()).save(buffer, format='JPEG', quality=JPEG_QUALITY)
            return buffer.getvalue()
        return self.prepared('jpeg', encode)


class FrameHub:
    """The newest frame of each camera not yet classified. `put` replaces (the replaced frame is
    skipped); `take` waits for frames and returns the newest of every camera that has one."""

    def __init__(self, cameras: List[str], stats: Dict[str, CameraStats]):
        self._ready = threading.Condition()
        self._frames: Dict[str, Optional[Frame]] = {name: None for name in cameras}
        self._stats = stats

    def put(self, frame: Frame) -> bool:
        """True when the frame replaced one the classifier had not taken (it is behind)."""
        with self._ready:
            replaced = self._frames[frame.camera] is not None
            self._frames[frame.camera] = frame
            self._ready.notify()
        self._stats[frame.camera].received(frame.decoded, skipped=replaced)
        return replaced

    def take(self, timeout: float) -> List[Frame]:
        with self._ready:
            self._ready.wait_for(lambda: any(f is not None for f in self._frames.values()), timeout)
            taken = [f for f in self._frames.values() if f is not None]
            for frame in taken:
                self._frames[frame.camera] = None
            return taken

    def pending(self, camera: str) -> bool:
        with self._ready:
            return self._frames[camera] is not None

    def wake(self) -> None:
        with self._ready:
            self._ready.notify_all()


def open_input(spec: CameraSpec, open_timeout: float, read_timeout: float):
    """The PyAV container of a camera. RTSP over TCP (no lost UDP packets, one port through NATs)."""
    import av
    options = {}
    kwargs = {}
    if spec.kind in ('rtsp', 'http'):  # probe 0.5 s, not FFmpeg's 5 s: a (re)connection decides sooner
        options['analyzeduration'] = '500000'
    if spec.kind == 'rtsp':
        options['rtsp_transport'] = 'tcp'
    elif spec.kind == 'device':
        kwargs['format'] = 'v4l2'
    options.update(spec.options)
    target = file_path(spec) if spec.kind == 'file' else spec.url
    return av.open(target, options=options, timeout=(open_timeout, read_timeout), **kwargs)


class StreamReader:
    """One camera's reader thread: open, decode, put frames in the hub; reconnect with back-off."""

    def __init__(self, spec: CameraSpec, hub: FrameHub, stats: CameraStats, stop: threading.Event,
                 reconnect_max: float = 2.0, stall_seconds: float = 5.0, open_timeout: float = 10.0,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 opener: Callable = open_input):
        self.spec, self.hub, self.stats, self.stop = spec, hub, stats, stop
        self.reconnect_max, self.stall_seconds, self.open_timeout = reconnect_max, stall_seconds, open_timeout
        self._clock, self._wall, self._open = clock, wall, opener
        self._log = RateLimitedLog(_log, 30.0)
        self.finished = threading.Event()  # a file played to its end (without loop)
        self._index = 0
        self._thread = threading.Thread(target=self._run, name=f'camera-{spec.name}', daemon=True)

    def start(self) -> 'StreamReader':
        self._thread.start()
        return self

    def join(self, timeout: Optional[float] = None) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        delay, first = 0.25, True
        self._failed = False  # the last attempt failed: the next connection is a reconnection
        while not self.stop.is_set():
            got_frames = False
            try:
                self.stats.set_state('connecting' if first else 'reconnecting', connected=False)
                got_frames = self._stream()
                if self.spec.kind == 'file' and not self.spec.loop:
                    break
                if self.spec.kind == 'file' and got_frames:
                    continue  # the file again from its start, at once
                reason = 'the stream ended'
            except Exception as e:  # every failure of a stream is retried; the reader never dies
                reason = str(e) if isinstance(e, SourceError) else f'{type(e).__name__}: {e}'
                if self.spec.kind == 'file' and not self.spec.loop:  # a file is not retried: it stays broken
                    self.stats.stream_error(reason)
                    self._log.warning(f'camera {self.spec.name}: {reason}')
                    break
            first, self._failed = False, True
            if self.stop.is_set():
                break
            if got_frames:
                delay = 0.25
            self.stats.stream_error(f'{reason}; retrying in {delay:g} s')
            self._log.warning(f'camera {self.spec.name}: {reason}; retrying (back-off up to {self.reconnect_max:g} s)')
            if self.stop.wait(delay):
                break
            delay = min(delay * 2, self.reconnect_max)
        if self.stop.is_set():
            self.stats.set_state('stopped', connected=False)
            return
        self.stats.set_state('finished', connected=False)
        self.finished.set()
        self.hub.wake()

    def _stream(self) -> bool:
        """Reads the stream until it ends; True when it gave at least one frame."""
        got = False
        container = self._open(self.spec, self.open_timeout, self.stall_seconds)
        try:
            stream = container.streams.video[0]
            too_large = edge_runtime.pixel_limit_error(f'camera {self.spec.name}', 'a frame',
                                                       stream.codec_context.width, stream.codec_context.height)
            if too_large:
                raise SourceError(str(too_large))
            mjpeg = stream.codec_context.name == 'mjpeg'
            pace = self._pacer(stream) if self.spec.paced else None
            self.stats.connected_now(self._clock(), reconnected=self._failed)
            self._failed = False
            last_frame = self._clock()
            for packet in container.demux(stream):
                if self.stop.is_set():
                    return got
                if mjpeg:  # each packet a whole JPEG: decoded only if the classifier takes it (Pillow, as photos)
                    decoded = [None] if packet.size else []
                else:
                    decoded = packet.decode()
                for video in decoded:
                    if video is not None:
                        too_large = edge_runtime.pixel_limit_error(f'camera {self.spec.name}', 'the frame', video.width,
                                                                   video.height)
                        if too_large:
                            raise SourceError(str(too_large))
                    if pace is not None and pace(video.time if video is not None else
                                                 (float(packet.pts * packet.time_base) if packet.pts is not None else None)):
                        return got
                    now = self._clock()
                    self._index += 1
                    got, last_frame = True, now
                    frame = Frame(self.spec.name, self._index, now, self._wall(), video=video,
                                  jpeg=bytes(packet) if mjpeg else None)
                    self.hub.put(frame)
                if self._clock() - last_frame > self.stall_seconds:
                    raise SourceError(f'no frame for {self.stall_seconds:g} s (stalled)')
        finally:
            container.close()
        return got

    def _pacer(self, stream) -> Callable:
        """For a file: waits until each frame's time on the wall clock (its own frame rate); True
        when stopped while waiting."""
        rate = float(stream.average_rate or stream.guessed_rate or 25)
        state = {'start': None, 'first': None, 'count': 0}

        def wait(time_of_frame: Optional[float]) -> bool:
            at = float(time_of_frame) if time_of_frame is not None else state['count'] / rate
            state['count'] += 1
            if state['start'] is None:
                state['start'], state['first'] = self._clock(), at
                return False
            delay = state['start'] + (at - state['first']) - self._clock()
            return delay > 0 and self.stop.wait(delay)
        return wait
