"""`petpark serve`'s request logging, configured with TF Serving's own LoggingConfig message in a file
of its own (`--request_logging_config_file`; TF Serving refuses a logging_config in models.config):

    sampling_config { sampling_rate: 0.1 }
    log_collector_config { type: "file" filename_prefix: "/var/log/petpark/requests/petpark" }

Both APIs hand over the same normalized request (model, resolved version and signature, input
arrays, output arrays; for Classify the serialized examples and their classes), so a REST and a
gRPC request for the same input make the same record. The request path only decides sampling and
queues a builder; request_log.RequestLogger's writer thread builds and writes the PredictionLog.
The file is re-read when it changes; a bad file keeps the configuration in force, as
--model_config_file does.
"""
import dataclasses
import logging
import os
import threading
import time
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from petpark.serving import config_protos, request_log

ORIGIN_HEADER = 'x-petpark-camera'  # REST header and gRPC metadata key naming the camera of a request
COLLECTOR_TYPES = ('', 'file')
_log = logging.getLogger('petpark.serving.request_logging')


@dataclasses.dataclass(frozen=True)
class Rotation:
    """How log files are cut and kept (request_log.RotatingFiles)."""
    max_file_bytes: int = 64 << 20
    max_file_seconds: float = 300.0
    quota_bytes: int = 1 << 30
    retention_seconds: float = 7 * 86400.0
    max_queued: int = 1024


def read_logging_config(path: str) -> Tuple[float, str]:
    """(sampling rate, filename prefix) of a text LoggingConfig; ValueError naming what is wrong."""
    from tensorflow_serving.config import logging_config_pb2
    config = config_protos.parse_text(path, logging_config_pb2.LoggingConfig)
    rate = config.sampling_config.sampling_rate
    collector = config.log_collector_config
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f'{path}: sampling_config.sampling_rate must be between 0 and 1, got {rate}')
    if collector.type not in COLLECTOR_TYPES:
        raise ValueError(f'{path}: log_collector_config.type {collector.type!r} is not supported (use "file")')
    if not collector.filename_prefix:
        raise ValueError(f'{path}: log_collector_config.filename_prefix is empty')
    return rate, os.path.abspath(collector.filename_prefix)


def origin_of(headers: Iterable[Tuple[str, str]]) -> str:
    """The camera a request names (ORIGIN_HEADER), cut to 100 printable characters."""
    for key, value in headers:
        if key.lower() == ORIGIN_HEADER:
            return ''.join(c for c in str(value) if c.isprintable())[:100]
    return ''


def as_signature_types(inputs: Dict[str, np.ndarray], signature) -> Dict[str, np.ndarray]:
    """REST's numbers (parsed as JSON gives them) in the dtypes the signature declares, as a gRPC
    request carries them, so that both log the same tensors."""
    import tensorflow as tf
    typed = {}
    for alias, value in inputs.items():
        array = np.asarray(value)
        wanted = tf.dtypes.as_dtype(signature.inputs[alias].dtype) if alias in signature.inputs else None
        typed[alias] = array.astype(wanted.as_numpy_dtype) if (
            wanted is not None and wanted != tf.string and array.dtype.kind in 'biuf') else array
    return typed


def _tensor(value) -> bytes:
    """An encoded TensorProto as TF Serving answers it (values in the typed field): strings and
    float32 written directly, the cheap common case of image requests and scores; other dtypes
    through TensorFlow's proto."""
    array = np.asarray(value)
    flat = array.ravel()
    if array.dtype == np.float32:
        return request_log.tensor(request_log.DT_FLOAT, array.shape, flat)
    if (array.dtype == object or array.dtype.kind == 'S') and all(isinstance(v, bytes) for v in flat):
        return request_log.tensor(request_log.DT_STRING, array.shape, flat)
    from petpark.serving import tensor_proto
    return tensor_proto.as_proto_field(array).SerializeToString()


def _predict_request(spec: bytes, inputs: Dict[str, np.ndarray], output_filter: Sequence[str]) -> bytes:
    return request_log.predict_request(spec, {alias: _tensor(value) for alias, value in inputs.items()}, output_filter)


def _predict_response(spec: bytes, outputs: Dict[str, np.ndarray]) -> bytes:
    return request_log.predict_response(spec, {alias: _tensor(value) for alias, value in outputs.items()})


def _predict_record(spec: bytes, inputs: Dict[str, np.ndarray], outputs: Dict[str, np.ndarray],
                    output_filter: Sequence[str], rate: float, stamp: int, origin: str) -> bytes:
    return request_log.prediction_log('predict', _predict_request(spec, inputs, output_filter),
                                      _predict_response(spec, outputs), spec, rate, stamp, origin)


@dataclasses.dataclass(frozen=True)
class Mirrored:
    """A request the stable version answered, mirrored to the canary version (serving/mirror.py)."""
    model: str
    stable_version: int
    canary_version: int
    signature: str
    inputs: Dict[str, np.ndarray]
    stable_outputs: Dict[str, np.ndarray]
    canary_outputs: Optional[Dict[str, np.ndarray]]  # None: the canary failed
    stable_micros: Optional[int]  # None: stable was not re-timed beside the canary (serving/mirror.py)
    canary_micros: int
    origin: str = ''
    output_filter: Tuple[str, ...] = ()


def mirrored_records(mirrored: Mirrored, rate: float, stamp: int) -> Tuple[bytes, bytes]:
    """The pair of PredictionLogs of a mirrored request, written together: the stable version's
    record, then the canary's, whose request is the same request (the stable version's model_spec)
    and whose response carries the canary's version, and no outputs when it failed. Each carries the
    model's time in INFERENCE_MICROS_FIELD."""
    m = mirrored
    stable = request_log.model_spec(m.model, m.stable_version, m.signature)
    canary = request_log.model_spec(m.model, m.canary_version, m.signature)
    request = _predict_request(stable, m.inputs, m.output_filter)
    return (request_log.prediction_log('predict', request, _predict_response(stable, m.stable_outputs), stable, rate,
                                       stamp, m.origin, m.stable_micros),
            request_log.prediction_log('predict', request, _predict_response(canary, m.canary_outputs or {}), canary,
                                       rate, stamp, m.origin, m.canary_micros))


def _classify_record(spec: bytes, examples: Sequence[bytes], results: List[list], rate: float, stamp: int,
                     origin: str) -> bytes:
    from tensorflow_serving.apis import classification_pb2
    request = classification_pb2.ClassificationRequest()
    request.model_spec.ParseFromString(spec)
    for data in examples:
        request.input.example_list.examples.add().ParseFromString(data)
    response = classification_pb2.ClassificationResponse()
    response.model_spec.ParseFromString(spec)
    for row in results:
        classes = response.result.classifications.add()
        for label, score in row:
            classes.classes.add(label=label, score=score)
    return request_log.prediction_log('classify', request.SerializeToString(), response.SerializeToString(), spec,
                                      rate, stamp, origin)


class ServingLog:
    """The server's request log: sampled records of Predict and Classify calls, REST and gRPC alike."""

    def __init__(self, config_path: Optional[str], rotation: Rotation = Rotation(), clock=time.time):
        self.config_path, self.rotation, self._clock = config_path, rotation, clock
        self._lock = threading.Lock()
        self._logger: Optional[request_log.RequestLogger] = None
        self._prefix = ''
        self._stamp = None
        self._retired: Dict[str, int] = {}
        self._retired_dropped: Dict[Tuple[str, str], int] = {}
        self.mirror = None  # serving/mirror.py's CanaryMirror, when --canary_mirror_rate is set
        if config_path:
            self._configure(*read_logging_config(config_path))
            self._stamp = os.path.getmtime(config_path)

    @property
    def enabled(self) -> bool:
        return self._logger is not None

    @property
    def sampling_rate(self) -> float:
        return self._logger.sampling_rate if self._logger is not None else 0.0

    def describe(self) -> str:
        if self._logger is None:
            return 'request logging off'
        return (f'request logging: {self._logger.sampling_rate:g} of requests to {self._prefix}-*.tfrecord '
                f'({self.config_path})')

    def _configure(self, rate: float, prefix: str) -> None:
        with self._lock:
            if self._logger is not None and prefix == self._prefix:
                self._logger.sampling_rate = rate
                return
            old, self._logger, self._prefix = self._logger, None, prefix
            self._logger = request_log.RequestLogger(
                request_log.RotatingFiles(prefix, self.rotation.max_file_bytes, self.rotation.max_file_seconds,
                                          self.rotation.quota_bytes, self.rotation.retention_seconds),
                rate, max_queued=self.rotation.max_queued)
        if old is not None:
            logged, dropped = old.counts()
            old.close()
            for model, count in logged.items():
                self._retired[model] = self._retired.get(model, 0) + count
            for key, count in dropped.items():
                self._retired_dropped[key] = self._retired_dropped.get(key, 0) + count

    def reload(self) -> str:
        """'unchanged', 'reloaded' or why the configuration in force was kept."""
        if not self.config_path:
            return 'unchanged'
        try:
            stamp = os.path.getmtime(self.config_path)
        except OSError as e:
            return f'kept the configuration in force: {self.config_path}: {e.strerror}'
        if stamp == self._stamp:
            return 'unchanged'
        self._stamp = stamp
        try:
            self._configure(*read_logging_config(self.config_path))
        except (ValueError, OSError) as e:
            return f'kept the configuration in force: {e}'
        return 'reloaded'

    def _submit(self, model: str, version: int, signature: str, build) -> None:
        logger = self._logger
        if logger is None or not logger.sampled():
            return
        spec = request_log.model_spec(model, version, signature)
        rate, stamp = logger.sampling_rate, int(self._clock())
        logger.log(model, lambda: build(spec, rate, stamp), sampled=True)

    def predict(self, model: str, version: int, signature: str, inputs: Dict[str, np.ndarray],
                outputs: Dict[str, np.ndarray], origin: str = '', output_filter: Sequence[str] = (),
                micros: int = 0) -> None:
        """Logs a sampled Predict; a request the canary mirror takes is logged as its pair instead.
        micros: the model's time on it."""
        if self.mirror is not None and self.mirror.offer(model, version, signature, inputs, outputs, micros, origin,
                                                         output_filter):
            return
        self._submit(model, version, signature, lambda spec, rate, stamp: _predict_record(
            spec, inputs, outputs, list(output_filter), rate, stamp, origin))

    def mirrored(self, mirrored: Mirrored, rate: float) -> bool:
        """Queues the pair of records of a mirrored request (sampled by the mirror, not by this log's
        rate); False when logging is off or the queue is full (counted)."""
        logger = self._logger
        if logger is None:
            return False
        stamp = int(self._clock())
        return logger.log(mirrored.model, lambda: mirrored_records(mirrored, rate, stamp), sampled=True)

    def classify(self, model: str, version: int, signature: str, examples: Sequence[bytes], results: List[list],
                 origin: str = '') -> None:
        self._submit(model, version, signature, lambda spec, rate, stamp: _classify_record(
            spec, list(examples), results, rate, stamp, origin))

    def counts(self) -> Tuple[Dict[str, int], Dict[Tuple[str, str], int]]:
        """Records logged per model, and dropped per (model, reason), since start."""
        logged, dropped = dict(self._retired), dict(self._retired_dropped)
        if self._logger is not None:
            now_logged, now_dropped = self._logger.counts()
            for model, count in now_logged.items():
                logged[model] = logged.get(model, 0) + count
            for key, count in now_dropped.items():
                dropped[key] = dropped.get(key, 0) + count
        return logged, dropped

    def watch(self, stopped: threading.Event, every_seconds: float = 5.0) -> None:
        """Re-reads the configuration file every `every_seconds` until `stopped`; never dies."""
        while not stopped.wait(every_seconds):
            try:
                result = self.reload()
            except Exception as e:  # the watcher goes on; the configuration in force stays
                result = f'kept the configuration in force: {type(e).__name__}: {e}'
            if result != 'unchanged':
                _log.warning('%s: %s', self.config_path, result)

    def close(self) -> None:
        if self._logger is not None:
            self._logger.close()
