"""Windows of request logs: the frames of finished log files, by time or count, version by version.

A log file counts once it is complete (`*.tfrecord`; a file still being written is `.tmp`). Each
PredictionLog record holds one request (predict or classify) with one or more frames; a frame is
taken from an `image_bytes` input (encoded image) or from the `image_raw` feature of a serialized
tf.Example (with its camera_id and captured_at when the client sent them), and its score is the
response's score of the positive class.
"""
import dataclasses
import os
from typing import Iterator, List, Optional, Sequence

from petpark.modules import features
from petpark.serving.request_log import PARTIAL_SUFFIX, RECORD_SUFFIX

IMAGE_INPUT = 'image_bytes'
EXAMPLES_INPUT = 'inputs'


@dataclasses.dataclass
class Frame:
    """One classified image, as a request log recorded it."""
    record_id: str  # <log file>#<record>[.<row>]
    timestamp: int  # seconds since the epoch (UTC), when it was served
    model_name: str
    version: Optional[int]
    signature: str
    origin: str  # the camera the request says it came from (request_origin), or ''
    image: Optional[bytes]
    camera_id: str = ''
    captured_at: str = ''
    score: Optional[float] = None  # P(positive class)

    @property
    def camera(self) -> str:
        return self.camera_id or self.origin


@dataclasses.dataclass
class Window:
    """The frames of one window and what was left out of it."""
    frames: List[Frame]
    files: List[str]
    start: Optional[int]
    end: Optional[int]
    skipped: dict = dataclasses.field(default_factory=dict)  # reason -> count

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def log_files(log_dir: str) -> List[str]:
    """Complete log files under `log_dir` (and its sub-folders), oldest name first."""
    found = []
    for root, _, names in os.walk(log_dir):
        found += [os.path.join(root, name) for name in names if name.endswith(RECORD_SUFFIX)]
    return sorted(found, key=lambda path: (os.path.basename(path), path))


def complete_until(log_dir: str, now: float) -> float:
    """The time up to which every record is in a finished file: the opening time of the oldest file
    a running writer is still writing (`<prefix>-<UTC time>-<pid>-<n>.tfrecord.tmp`), else `now`.
    A window that ends later would miss records that land in those files once they complete."""
    import calendar
    import time
    settled = now
    for root, _, names in os.walk(log_dir):
        for name in names:
            if not name.endswith(PARTIAL_SUFFIX):
                continue
            try:
                stamp, pid = name[:-len(PARTIAL_SUFFIX)].rsplit('-', 3)[1:3]
                os.kill(int(pid), 0)
                opened = calendar.timegm(time.strptime(stamp, '%Y%m%dT%H%M%S'))
            except (ValueError, ProcessLookupError):  # not a writer's name, or its writer is gone
                continue
            except PermissionError:  # another user's writer: running
                opened = os.path.getmtime(os.path.join(root, name)) - 1
            settled = min(settled, opened)
    return settled


def _first_bytes(feature_map, key: str) -> Optional[bytes]:
    values = feature_map[key].bytes_list.value if key in feature_map else []
    return values[0] if values else None


def _example_frames(serialized: Sequence[bytes]) -> Iterator[dict]:
    from tensorflow.core.example import example_pb2
    for data in serialized:
        feature = example_pb2.Example.FromString(data).features.feature
        camera, captured = _first_bytes(feature, features.CAMERA_KEY), _first_bytes(feature, features.CAPTURED_AT_KEY)
        yield {'image': _first_bytes(feature, features.IMAGE_KEY),
               'camera_id': camera.decode('utf-8', 'replace') if camera else '',
               'captured_at': captured.decode('utf-8', 'replace') if captured else ''}


def _positive_scores(outputs, rows: int, class_id: int) -> List[Optional[float]]:
    import tensorflow as tf
    if 'scores' not in outputs:
        return [None] * rows
    scores = tf.make_ndarray(outputs['scores'])
    return [float(row[class_id]) if len(row) > class_id else None for row in scores.reshape(len(scores), -1)]


def frames_of(log, record_id: str, class_id: int = features.POSITIVE_CLASS_ID) -> List[Frame]:
    """The frames of one PredictionLog."""
    import tensorflow as tf
    metadata = log.log_metadata
    spec = metadata.model_spec
    version = spec.version.value if spec.HasField('version') else None
    common = dict(timestamp=int(metadata.timestamp_secs), model_name=spec.name, version=version,
                  origin=metadata.request_origin)
    kind = log.WhichOneof('log_type')
    rows: List[dict] = []
    scores: List[Optional[float]] = []
    if kind == 'predict_log':
        request, response = log.predict_log.request, log.predict_log.response
        signature = request.model_spec.signature_name or 'serving_default'
        if IMAGE_INPUT in request.inputs:
            rows = [{'image': data} for data in tf.make_ndarray(request.inputs[IMAGE_INPUT]).reshape(-1)]
        elif EXAMPLES_INPUT in request.inputs:
            rows = list(_example_frames(tf.make_ndarray(request.inputs[EXAMPLES_INPUT]).reshape(-1)))
        scores = _positive_scores(response.outputs, len(rows), class_id)
    elif kind == 'classify_log':
        request, response = log.classify_log.request, log.classify_log.response
        signature = request.model_spec.signature_name or 'serving_default'
        examples = request.input.example_list.examples or request.input.example_list_with_context.examples
        rows = list(_example_frames([e.SerializeToString() for e in examples]))
        for classes in response.result.classifications:
            positive = [c.score for c in classes.classes if c.label == features.LABELS[class_id]]
            scores.append(float(positive[0]) if positive else None)
    else:
        return []
    scores += [None] * (len(rows) - len(scores))
    return [Frame(record_id=record_id if len(rows) == 1 else f'{record_id}.{i}', signature=signature, score=score,
                  image=row.get('image'), camera_id=row.get('camera_id', ''), captured_at=row.get('captured_at', ''),
                  **common)
            for i, (row, score) in enumerate(zip(rows, scores))]


def file_records(path: str) -> List[bytes]:
    """The records of one TFRecord file; tf.errors.OpError when it is damaged."""
    import tensorflow as tf
    return [record.numpy() for record in tf.data.TFRecordDataset(path)]


def read_window(log_dir: str, model_name: str, version: Optional[int] = None, since: Optional[int] = None,
                until: Optional[int] = None, last: Optional[int] = None) -> Window:
    """The frames of `model_name` (and `version`) served in [since, until), or its last `last` frames."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2
    window = Window([], [], since, until)
    for path in log_files(log_dir):
        used = False
        try:
            records = file_records(path)
        except tf.errors.OpError:  # damaged file: skipped, counted, and the rest is read
            window.skip('unreadable_file')
            continue
        for index, record in enumerate(records):
            try:
                log = prediction_log_pb2.PredictionLog.FromString(record)
            except Exception:  # protobuf's DecodeError: not a PredictionLog
                window.skip('not_a_prediction_log')
                continue
            spec = log.log_metadata.model_spec
            if spec.name != model_name or (version is not None and spec.version.value != version):
                continue
            stamp = int(log.log_metadata.timestamp_secs)
            if (since is not None and stamp < since) or (until is not None and stamp >= until):
                continue
            found = frames_of(log, f'{os.path.basename(path)}#{index}')
            if not found:
                window.skip('no_image_in_request')
            window.frames += found
            used = used or bool(found)
        if used:
            window.files.append(path)
    if last is not None:
        window.frames = sorted(window.frames, key=lambda f: f.timestamp)[-last:]
    if window.frames:
        window.start = window.start if window.start is not None else min(f.timestamp for f in window.frames)
        window.end = window.end if window.end is not None else max(f.timestamp for f in window.frames) + 1
    return window
