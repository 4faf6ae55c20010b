"""Frames to scores, with the same results from either back-end:

- EdgeBackend: the edge runtime (ONNX through onnxruntime, no TensorFlow) on the edge push folder
  `<home>/edge/<model>/` or a copy of it. It follows `labels.json`'s label (`stable`; written
  atomically by `petpark promote`) when the file exists, else the newest version. A new version is
  loaded and checked in a background thread, then swapped in between two batches: no frame waits
  for a load, and a version that does not load leaves the current one deciding (said once).
- GrpcBackend: a model server (TF Serving or `petpark serve`) through PredictionService/Predict on
  the `serving_image_bytes` signature, by version label (`stable`). By default one request per
  camera, sent together, each with its camera in the `x-petpark-camera` header (the server's
  request log and per-camera counts), for the server to batch (`--enable_batching`); with
  `client_batch`, one request carries every camera's frame.

Each returns, per frame, a Result: the scores and the model that produced them (name, version,
class names, positive class, decision threshold from that version's metadata.json).
"""
import concurrent.futures
import dataclasses
import json
import logging
import os
import threading
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from petpark.serving import edge_runtime
from petpark.serving.camera import wire
from petpark.serving.log_limits import RateLimitedLog

_log = logging.getLogger('petpark.serving.camera')
LABELS_FILE = 'labels.json'
MAX_LABELS_BYTES = 64 << 10
IMAGE_SIGNATURE = 'serving_image_bytes'
IMAGE_INPUT = 'image_bytes'


class BackendUnavailable(Exception):
    """The back-end cannot decide now (a server away or refusing): retried after a back-off."""


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    model_name: str
    version: Optional[int]
    class_names: Tuple[str, ...]
    positive: int
    threshold: float


@dataclasses.dataclass
class Result:
    scores: np.ndarray
    model: ModelInfo
    error: Optional[str] = None  # this frame only was refused (the others of the batch were decided)


def _info(model: edge_runtime.EdgeModel) -> ModelInfo:
    return ModelInfo(model.metadata['model_name'], int(model.metadata['version']), tuple(model.class_names),
                     model.positive, float(model.threshold))


def read_labels(path: str) -> Dict[str, str]:
    """labels.json: {"stable": "<version>", ...}; ValueError saying what is wrong with it."""
    try:
        if os.path.getsize(path) > MAX_LABELS_BYTES:
            raise ValueError(f'{path}: over {MAX_LABELS_BYTES} bytes')
        with open(path) as f:
            document = json.load(f)
    except OSError as e:
        raise ValueError(f'{path}: {e.strerror or e}') from None
    except json.JSONDecodeError as e:
        raise ValueError(f'{path}: not JSON ({e}; half-written?)') from None
    if not isinstance(document, dict):
        raise ValueError(f'{path}: expected an object of labels to versions')
    labels = {}
    for label, version in document.items():
        if isinstance(version, bool) or not isinstance(version, (str, int)) or not str(version).isdigit():
            raise ValueError(f'{path}: label {label!r} names {version!r}, not a version number')
        labels[label] = str(int(version))
    return labels


def _folder_signature(folder: str) -> Tuple:
    try:
        return tuple(sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in os.scandir(folder)))
    except OSError:
        return ()


class EdgeBackend:
    """The edge runtime, following a label (or pinned to a version), swapped without a gap."""

    name = 'edge'

    def __init__(self, model_dir: str, label: str = 'stable', version: Optional[int] = None, int8: bool = False,
                 threads: int = 1, poll_seconds: float = 2.0, loader: Callable = edge_runtime.EdgeModel,
                 announce: Callable[[str], None] = _log.warning):
        self.model_dir, self.label, self.pinned = model_dir, label, version
        self.int8, self.threads, self.poll_seconds = int8, threads, poll_seconds
        self._loader, self._announce = loader, announce
        self._said: set = set()
        self._failed: Dict[str, Tuple] = {}  # version -> folder signature when it failed to load
        self._log = RateLimitedLog(_log, 30.0)
        self.swaps = 0
        if not os.path.isdir(model_dir):
            raise edge_runtime.EdgeError(f'{model_dir}: no such model folder')
        wanted = str(version) if version is not None else self.wanted()
        model = loader(model_dir, wanted, int8, threads)  # EdgeError (one line) when it cannot load
        self._current = (model, _info(model))  # one attribute: a batch reads the model and its facts at once
        self._pool = concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix='camera-pixels')
        self._stop = threading.Event()
        self._thread = None
        if version is None and poll_seconds > 0:
            self._thread = threading.Thread(target=self._watch, name='camera-model-watch', daemon=True)
            self._thread.start()

    @property
    def info(self) -> ModelInfo:
        return self._current[1]

    def _say_once(self, message: str) -> None:
        if message not in self._said:
            self._said.add(message)
            self._announce(message)

    def wanted(self) -> Optional[str]:
        """The version to run: labels.json's label when the file exists and is good, else the newest
        complete version; None to keep the current one (a bad labels.json, said once)."""
        path = os.path.join(self.model_dir, LABELS_FILE)
        current = self._current[1] if hasattr(self, '_current') else None
        if os.path.exists(path):
            try:
                labels = read_labels(path)
            except ValueError as e:
                return self._keep(f'{e}', current)
            if self.label not in labels:
                return self._keep(f'{path}: no {self.label!r} label', current)
            version = labels[self.label]
            if not os.path.isfile(os.path.join(self.model_dir, version, edge_runtime.METADATA_FILE)):
                return self._keep(f'{path}: {self.label!r} is version {version}, which is not in {self.model_dir} '
                                  '(yet)', current)
            self._said = {m for m in self._said if not m.startswith(path)}
            return version
        folder = edge_runtime.version_folder(self.model_dir, None)
        return os.path.basename(folder)

    def _keep(self, problem: str, current: Optional[ModelInfo]) -> Optional[str]:
        if current is None:  # nothing runs yet: start with the newest version meanwhile
            newest = os.path.basename(edge_runtime.version_folder(self.model_dir, None))
            self._say_once(f'{problem}; starting with the newest version, {newest}')
            return newest
        self._say_once(f'{problem}; keeping version {current.version}')
        return None

    def refresh(self) -> bool:
        """Loads and swaps in the wanted version when it differs; True when it swapped."""
        wanted = self.wanted()
        current = self._current[1]
        if wanted is None or int(wanted) == current.version:
            return False
        folder = os.path.join(self.model_dir, wanted)
        signature = _folder_signature(folder)
        if self._failed.get(wanted) == signature:
            return False  # it failed as it is; tried again once its files change
        try:
            model = self._loader(self.model_dir, wanted, self.int8, self.threads)
        except edge_runtime.EdgeError as e:
            self._failed[wanted] = signature
            self._announce(f'version {wanted} does not load ({e}); keeping version {current.version}')
            return False
        self._current = (model, _info(model))  # the swap: the next batch uses the new model
        self.swaps += 1
        self._announce(f'now deciding with version {self._current[1].version} (was {current.version})')
        return True

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.refresh()
            except Exception as e:  # the watcher never dies: the current model keeps deciding
                self._log.warning(f'model watch: {type(e).__name__}: {e}; keeping version {self.info.version}')

    @staticmethod
    def _pixels(model: edge_runtime.EdgeModel, frame):
        """The frame's model input (EdgeModel.pixels: decode, resize, scale), computed once per
        preprocessing (a swapped-in version with another input size computes its own)."""
        key = ('pixels', model.size, model.round_levels, model.clip, model.divide_by)
        return frame.prepared(key, lambda: model.pixels(frame.rgb()))

    def classify(self, frames: Sequence) -> List[Result]:
        """One onnxruntime call for the batch; each frame's preprocessing (decode and resize: most of
        the cost) on the pool's threads, side by side (Pillow releases the GIL while it works). A frame
        that cannot be decoded (a corrupt JPEG, over the pixel bound) fails alone."""
        model, info = self._current

        def pixels(frame):
            try:
                return self._pixels(model, frame), None
            except Exception as e:  # this frame only
                return None, f'camera {frame.camera}: a frame not decided ({type(e).__name__}: {e})'
        prepared = list(self._pool.map(pixels, frames))
        good = [p for p, _ in prepared if p is not None]
        scores = iter(model.session.run(None, {model.metadata['input']['name']: np.stack(good)})[0] if good else [])
        return [Result(np.asarray(next(scores)), info) if p is not None else Result(np.zeros(0, np.float32), info, error)
                for p, error in prepared]

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)


class GrpcBackend:
    """A model server's PredictionService, by label (or version), without TensorFlow."""

    name = 'server'

    def __init__(self, target: str, model_name: str = 'petpark', label: str = 'stable', version: Optional[int] = None,
                 timeout: float = 5.0, client_batch: bool = False, model_dir: Optional[str] = None,
                 threshold: Optional[float] = None, signature: str = IMAGE_SIGNATURE):
        import grpc
        host, _, port = target.rpartition(':')
        if not host or not port.isdigit():
            raise ValueError(f'--server {target!r}: expected HOST:PORT')
        if model_dir is not None and not os.path.isdir(model_dir):
            raise edge_runtime.EdgeError(f'{model_dir}: no such model folder')
        self._grpc = grpc
        self.target, self.model_name, self.label, self.version = target, model_name, label, version
        self.timeout, self.client_batch, self.model_dir = timeout, client_batch, model_dir
        self.threshold, self.signature = threshold, signature
        self._channel = grpc.insecure_channel(target, options=[
            ('grpc.max_receive_message_length', 64 << 20), ('grpc.max_send_message_length', 64 << 20),
            ('grpc.initial_reconnect_backoff_ms', 250), ('grpc.max_reconnect_backoff_ms', 2000)])
        self._predict = self._channel.unary_unary(wire.PREDICT_METHOD)  # bytes in, bytes out
        self._thresholds: Dict[int, Tuple[float, Optional[Tuple[str, ...]], Optional[int]]] = {}
        self._info = ModelInfo(model_name, None, ('cat', 'dog'), 1, threshold if threshold is not None else 0.5)

    @property
    def info(self) -> ModelInfo:
        return self._info

    def _model_info(self, version: Optional[int], classes: np.ndarray) -> ModelInfo:
        """The answering version's class names, positive class and threshold: from its metadata.json under
        model_dir when there, else the response's class names, the last positive, --threshold or 0.5."""
        names = tuple(c.decode() if isinstance(c, bytes) else str(c) for c in classes) if classes is not None else \
            self._info.class_names
        threshold, positive = (self.threshold if self.threshold is not None else 0.5), len(names) - 1
        if self.model_dir and version is not None:
            if version not in self._thresholds:
                self._thresholds[version] = self._metadata(version)
            found, found_names, found_positive = self._thresholds[version]
            if found is not None:
                threshold = found if self.threshold is None else self.threshold
                names, positive = found_names, found_positive
        self._info = ModelInfo(self.model_name, version, names, positive, threshold)
        return self._info

    def _metadata(self, version: int):
        path = os.path.join(self.model_dir, str(version), edge_runtime.METADATA_FILE)
        try:
            with open(path) as f:
                output = json.load(f)['output']
            names = tuple(output['class_names'])
            return float(output['decision_threshold']), names, names.index(output['positive_class'])
        except (OSError, ValueError, KeyError, TypeError) as e:
            _log.warning(f'{path}: no decision threshold ({type(e).__name__}: {e}); using '
                         f'{self.threshold if self.threshold is not None else 0.5}')
            return None, None, None

    def _request(self, frames: Sequence) -> bytes:
        return wire.predict_request(self.model_name, self.signature, IMAGE_INPUT, [f.encoded() for f in frames],
                                    self.label, self.version)

    def _results(self, reply: bytes, count: int) -> List[Result]:
        outputs, version = wire.predict_response(reply)
        if 'scores' not in outputs or outputs['scores'].shape[0] != count:
            raise wire.WireError(f'the response has no scores for {count} images ({sorted(outputs)})')
        classes = outputs.get('classes')
        info = self._model_info(version, classes[0] if classes is not None and len(classes) else None)
        return [Result(np.asarray(row, dtype=np.float32), info) for row in outputs['scores']]

    def _failure(self, error) -> Exception:
        code = error.code() if hasattr(error, 'code') else None
        text = f'{self.target}: gRPC {code.name if code else "error"}: {error.details() if hasattr(error, "details") else error}'
        return BackendUnavailable(text)

    def classify(self, frames: Sequence) -> List[Result]:
        """Scores per frame. BackendUnavailable when nothing could be decided; a frame the server
        refused alone comes back with its error."""
        if self.client_batch:
            try:
                reply = self._predict(self._request(frames), timeout=self.timeout)
            except self._grpc.RpcError as e:
                raise self._failure(e) from None
            return self._results(reply, len(frames))
        calls = [self._predict.future(self._request([f]), timeout=self.timeout,
                                      metadata=(('x-petpark-camera', f.camera),)) for f in frames]
        results, errors = [], []
        for call in calls:
            try:
                results.append(self._results(call.result(), 1)[0])
            except self._grpc.RpcError as e:
                errors.append(self._failure(e))
                results.append(Result(np.zeros(0, np.float32), self._info, str(errors[-1])))
        if len(errors) == len(frames):
            raise errors[0]
        return results

    def close(self) -> None:
        self._channel.close()
