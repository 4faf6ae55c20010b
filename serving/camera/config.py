"""Which cameras, and every flag of `petpark camera`. Standard library only: `petpark --help` and a
bad flag or config file are answered without importing PyAV, onnxruntime or gRPC.

Cameras come from `--camera NAME=URL` (repeatable) and/or `--config FILE`, a JSON file:

    {"cameras": [{"name": "gate", "url": "rtsp://192.0.2.10:554/stream1"},
                 {"name": "shed", "url": "/dev/video0", "options": {"video_size": "640x480"}},
                 {"name": "demo", "url": "park.mp4", "loop": true},
                 {"name": "replay", "url": "http://192.0.2.12/day.m3u8", "realtime": true}]}

`loop` plays a file again at its end; `realtime` paces a source at its own frame rate (files are;
set it for an HLS recording or anything else that would arrive faster than it was filmed).
A camera's name is its id everywhere (request_origin in the request logs, the `camera` label of
metrics, event records, snapshot files), as ingestion and the Evaluator's slices use it.
"""
import argparse
import dataclasses
import json
import os
import re
import urllib.parse
from typing import Dict, List, Optional

DESCRIPTION = """Classifies live camera streams (RTSP, HTTP MJPEG or HLS, /dev/videoN, or video files at their
frame rate) with the edge model (--model-dir, ONNX, no TensorFlow) or a model server (--server,
gRPC, label stable), and turns frames into debounced cat/dog presences: a line per event, JSON
lines and a snapshot per event (--events-dir), a webhook (--webhook). Lag stays bounded (newest
frame wins, skipped frames counted); streams and servers that drop are retried. A status line per
camera on the terminal, the same numbers at --metrics-port; sampled frames logged for `petpark
monitor` (--log-dir). Cameras: --camera NAME=URL, or a JSON file:

    {"cameras": [{"name": "gate", "url": "rtsp://192.0.2.10:554/stream1"},
                 {"name": "shed", "url": "/dev/video0", "options": {"video_size": "640x480"}},
                 {"name": "demo", "url": "park.mp4", "loop": true}]}

docs/cameras.md has the details."""
NAME = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.-]{0,63}')
MAX_CONFIG_BYTES = 1 << 20
MAX_CAMERAS = 64
KINDS = ('rtsp', 'http', 'device', 'file')


class ConfigError(ValueError):
    """A bad flag, URL or config file, said in one line naming it."""


@dataclasses.dataclass(frozen=True)
class CameraSpec:
    """One camera: its id, where its frames come from, and how (`kind`: rtsp, http, device, file)."""
    name: str
    url: str
    kind: str
    options: Dict[str, str] = dataclasses.field(default_factory=dict)  # FFmpeg options for this input
    loop: bool = False  # a file: play it again from the start at its end
    realtime: Optional[bool] = None  # paced at its own frame rate (default: files only)

    @property
    def paced(self) -> bool:
        return self.kind == 'file' if self.realtime is None else self.realtime

    @property
    def live(self) -> bool:
        return self.kind != 'file'


def url_kind(url: str, where: str) -> str:
    """rtsp, http (MJPEG or HLS), device (a V4L2 device) or file (played at its frame rate);
    ConfigError naming `where` for anything else."""
    parsed = urllib.parse.urlparse(url)
    scheme = parsed.scheme.lower()
    if scheme in ('rtsp', 'rtsps', 'http', 'https'):
        if not parsed.hostname:
            raise ConfigError(f'{where}: {url!r} has no host')
        try:
            parsed.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError:
            raise ConfigError(f'{where}: {url!r} has a bad port') from None
        return 'rtsp' if scheme.startswith('rtsp') else 'http'
    if scheme == 'file':
        url = urllib.parse.unquote(parsed.path)
    elif scheme and len(scheme) > 1:  # (a one-letter "scheme" is a Windows drive, which this is not for)
        raise ConfigError(f'{where}: {url!r}: unsupported source (rtsp://, http(s):// MJPEG or HLS, /dev/videoN or '
                          'a video file)')
    if re.fullmatch(r'/dev/video\d+', url):
        return 'device'
    if not os.path.isfile(url):
        raise ConfigError(f'{where}: {url}: no such video file')
    return 'file'


def file_path(spec: CameraSpec) -> str:
    """The path of a file source (a `file://` URL or a plain path)."""
    parsed = urllib.parse.urlparse(spec.url)
    return urllib.parse.unquote(parsed.path) if parsed.scheme == 'file' else spec.url


def camera(name: str, url: str, where: str, options: Optional[Dict[str, str]] = None, loop: bool = False,
           realtime: Optional[bool] = None) -> CameraSpec:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ConfigError(f'{where}: camera name {name!r} must be 1 to 64 letters, digits, ".", "_" or "-"')
    if not isinstance(url, str) or not url:
        raise ConfigError(f'{where}: camera {name}: the url must be a non-empty text')
    return CameraSpec(name, url, url_kind(url, f'{where}: camera {name}'), dict(options or {}), loop, realtime)


def from_flag(text: str, loop: bool = False) -> CameraSpec:
    name, sep, url = text.partition('=')
    if not sep:
        raise ConfigError(f'--camera {text!r}: expected NAME=URL')
    return camera(name.strip(), url.strip(), '--camera', loop=loop)


def from_file(path: str, loop: bool = False) -> List[CameraSpec]:
    """The cameras of a config file; ConfigError naming the file and the field otherwise."""
    try:
        if os.path.getsize(path) > MAX_CONFIG_BYTES:
            raise ConfigError(f'{path}: over {MAX_CONFIG_BYTES} bytes; not a camera config')
        with open(path) as f:
            document = json.load(f)
    except OSError as e:
        raise ConfigError(f'{path}: {e.strerror or e}') from None
    except ValueError as e:
        raise ConfigError(f'{path}: not JSON ({e})') from None
    if not isinstance(document, dict) or set(document) - {'cameras'}:
        extra = sorted(set(document) - {'cameras'}) if isinstance(document, dict) else None
        raise ConfigError(f'{path}: expected {{"cameras": [...]}}' + (f', found unknown keys {extra}' if extra else ''))
    entries = document.get('cameras')
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f'{path}: "cameras" must be a non-empty list')
    cameras = []
    for i, entry in enumerate(entries):
        where = f'{path}: cameras[{i}]'
        if not isinstance(entry, dict):
            raise ConfigError(f'{where} must be an object with "name" and "url"')
        unknown = sorted(set(entry) - {'name', 'url', 'options', 'loop', 'realtime'})
        if unknown:
            raise ConfigError(f'{where}: unknown keys {unknown} (name, url, options, loop, realtime)')
        for key in ('name', 'url'):
            if key not in entry:
                raise ConfigError(f'{where}.{key} is missing')
        options = entry.get('options', {})
        if not isinstance(options, dict) or not all(isinstance(k, str) and isinstance(v, (str, int, float))
                                                    for k, v in options.items()):
            raise ConfigError(f'{where}.options must be an object of FFmpeg option names to values')
        for key in ('loop', 'realtime'):
            if not isinstance(entry.get(key, False), bool):
                raise ConfigError(f'{where}.{key} must be true or false')
        cameras.append(camera(entry['name'], entry['url'], where, {k: str(v) for k, v in options.items()},
                              entry.get('loop', loop), entry.get('realtime')))
    return cameras


def cameras_of(args: argparse.Namespace) -> List[CameraSpec]:
    """Every camera the flags and the config file name, checked: unique names, known sources."""
    cameras = from_file(args.config, args.loop) if args.config else []
    cameras += [from_flag(text, args.loop) for text in args.camera or []]
    if not cameras:
        raise ConfigError('no camera: give --camera NAME=URL or --config FILE')
    if len(cameras) > MAX_CAMERAS:
        raise ConfigError(f'{len(cameras)} cameras: at most {MAX_CAMERAS} in one loop')
    seen = set()
    for spec in cameras:
        if spec.name in seen:
            raise ConfigError(f'camera name {spec.name!r} is given twice')
        seen.add(spec.name)
    return cameras


def _rate(text: str) -> float:
    try:
        rate = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a rate between 0 and 1, got {text!r}') from None
    if not 0.0 <= rate <= 1.0:
        raise argparse.ArgumentTypeError(f'must be between 0 and 1, got {text}')
    return rate


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'expected a number, got {text!r}') from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f'must be above 0, got {text}')
        return value
    return parse


def _fraction(text: str) -> float:
    value = _rate(text)
    if value >= 1.0:
        raise argparse.ArgumentTypeError(f'must be below 1, got {text}')
    return value


def add_flags(parser: argparse.ArgumentParser) -> None:
    """`petpark camera`'s flags (also `python -m petpark.serving.camera`)."""
    where = parser.add_argument_group('cameras')
    where.add_argument('--camera', action='append', metavar='NAME=URL',
                       help='a camera: rtsp://..., http(s)://... (MJPEG or HLS), /dev/videoN, or a video file played at '
                            'its frame rate (repeatable)')
    where.add_argument('--config', metavar='FILE', help='cameras from a JSON file: {"cameras": [{"name", "url"}]}')
    where.add_argument('--loop', action='store_true', help='play video files again at their end (demos)')
    where.add_argument('--reconnect-max', type=_positive(float), default=2.0, metavar='S',
                       help='longest wait between reconnection attempts (back-off from 0.25 s; default 2)')
    where.add_argument('--stall-seconds', type=_positive(float), default=5.0, metavar='S',
                       help='a stream without a frame this long is reconnected (default 5)')

    model = parser.add_argument_group('model (the edge back-end unless --server is given)')
    model.add_argument('--model-dir', help="edge back-end: the edge push folder <home>/edge/<model> (or a copy); "
                                           "with --server: only the versions' metadata.json (decision thresholds)")
    model.add_argument('--server', metavar='HOST:PORT', help="server back-end: TF Serving's or petpark serve's gRPC port")
    model.add_argument('--model', default='petpark', help='server back-end: the served model name (default petpark)')
    model.add_argument('--label', default='stable',
                       help='the version label to follow: labels.json (edge) or model_spec.version_label (server); '
                            'default stable')
    model.add_argument('--version', type=int, help='a fixed version instead of the label')
    model.add_argument('--int8', action='store_true', help='edge: the INT8 model (when the version ships one)')
    model.add_argument('--threads', type=int, default=1, help='edge: onnxruntime threads (default 1)')
    model.add_argument('--model-poll', type=float, default=2.0, metavar='S',
                       help='edge: seconds between checks for a new version (0: never; default 2)')
    model.add_argument('--client-batch', action='store_true',
                       help="server: one request carries every camera's frame (fewer calls, but no per-camera "
                            'x-petpark-camera header); default: one request per camera, sent together, batched '
                            'by the server (--enable_batching)')
    model.add_argument('--timeout', type=_positive(float), default=5.0, metavar='S', help='server: request deadline')
    model.add_argument('--threshold', type=_rate, metavar='T',
                       help="the decision threshold when no metadata.json gives it (server back-end without "
                            '--model-dir; default 0.5)')

    events = parser.add_argument_group('events')
    events.add_argument('--events-dir', help='write events.jsonl and a snapshot JPEG per event (snapshots/) here')
    events.add_argument('--webhook', metavar='URL', help='POST each event record (JSON) to this URL')
    events.add_argument('--enter-frames', type=_positive(int), default=3, metavar='N',
                        help='a presence starts when N of the last --window frames vote for the class (default 3)')
    events.add_argument('--window', type=_positive(int), default=5, metavar='N', help='default 5')
    events.add_argument('--exit-seconds', type=_positive(float), default=1.5, metavar='S',
                        help='a presence ends when no frame has voted for the class for S seconds (default 1.5)')
    events.add_argument('--margin', type=_fraction, default=0.5, metavar='M',
                        help='a frame votes only when its score is this far from the threshold, as a share of the '
                             'way to 0 or 1 (default 0.5: 0.25 / 0.75 around a 0.5 threshold; 0: every frame votes)')

    logs = parser.add_argument_group('request logs and the live view')
    logs.add_argument('--log-dir', help='log sampled frames as PredictionLog TFRecords here, as petpark serve does, '
                                        'for `petpark monitor` (request_origin = the camera)')
    logs.add_argument('--log-sampling', type=_rate, default=0.01, metavar='RATE',
                      help='share of classified frames logged (default 0.01)')
    logs.add_argument('--metrics-port', metavar='[HOST:]PORT',
                      help='Prometheus metrics at /metrics (PORT alone binds 127.0.0.1)')
    logs.add_argument('--status-every', type=float, metavar='S',
                      help='status lines every S seconds (default 1 on a terminal, else 10; 0: none)')
    logs.add_argument('--duration', type=_positive(float), metavar='S', help='stop after S seconds')
