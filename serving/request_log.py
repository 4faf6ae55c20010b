"""Request logs as TF Serving writes them: PredictionLog records in TFRecord files.

Used by `petpark serve` and by the edge runtime and camera loop, so it imports nothing of petpark
and no TensorFlow (copy it beside serving/edge_runtime.py on an edge box). Records are encoded
here on the protobuf wire, field for field as tensorflow_serving/apis/prediction_log.proto,
logging.proto, predict.proto and classification.proto declare them; TensorFlow's own
PredictionLog parses them (tests/serving/test_request_log.py checks that).

The request path only decides sampling and hands a record builder to a bounded queue; a writer
thread builds and writes the records. Files rotate by size and age, are written under a `.tmp`
name and renamed when complete (readers take only `*.tfrecord`), and are kept within a byte quota
and a retention age. A full disk, a read-only or missing folder, or a full queue drops records,
counted by reason; none of it fails or slows a request, and the writer thread never dies.
"""
import collections
import errno
import logging
import os
import queue
import random
import struct
import threading
import time
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

RECORD_SUFFIX = '.tfrecord'
PARTIAL_SUFFIX = '.tfrecord.tmp'
DT_FLOAT, DT_INT64, DT_STRING = 1, 9, 7
DROP_REASONS = ('queue_full', 'disk_full', 'read_only', 'write_error', 'unencodable')
# LogMetadata has no field for how long the model took. Records of mirrored requests carry it in
# this field number, far above TF Serving's own: its parsers keep it as an unknown field.
INFERENCE_MICROS_FIELD = 1000
_log = logging.getLogger('petpark.serving.request_log')

try:  # the C implementation when the box has it (google-crc32c comes with the TFX stack)
    import google_crc32c

    def crc32c(data: bytes) -> int:
        return google_crc32c.value(data)
except ImportError:  # pragma: no cover - exercised on edge boxes without the package
    _TABLE = []
    for _byte in range(256):
        _crc = _byte
        for _ in range(8):
            _crc = (_crc >> 1) ^ 0x82F63B78 if _crc & 1 else _crc >> 1
        _TABLE.append(_crc)

    def crc32c(data: bytes) -> int:
        crc = 0xFFFFFFFF
        for byte in data:
            crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
        return crc ^ 0xFFFFFFFF


# -- the protobuf wire format, for the few messages a request log holds -----------------------------
def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64: two's complement, ten bytes
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def _field(number: int, data: bytes) -> bytes:
    """A length-delimited field (string, bytes, message)."""
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _int_field(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value) if value else b''


def _double_field(number: int, value: float) -> bytes:
    return _varint(number << 3 | 1) + struct.pack('<d', value)


def model_spec(name: str, version: Optional[int] = None, signature_name: str = '') -> bytes:
    """tensorflow.serving.ModelSpec: name = 1, version (Int64Value) = 2, signature_name = 3."""
    encoded = _field(1, name.encode())
    if version is not None:
        encoded += _field(2, _int_field(1, version))
    return encoded + (_field(3, signature_name.encode()) if signature_name else b'')


def tensor(dtype: int, shape: Sequence[int], values: Iterable) -> bytes:
    """tensorflow.TensorProto of DT_STRING (string_val = 8), DT_FLOAT (float_val = 5, packed) or
    DT_INT64 (int64_val = 10, packed); tensor_shape = 2 with its dims (2: size = 1)."""
    shape_proto = b''.join(_field(2, _int_field(1, size)) for size in shape)
    encoded = _int_field(1, dtype) + _field(2, shape_proto)
    if dtype == DT_STRING:
        return encoded + b''.join(_field(8, value) for value in values)
    if dtype == DT_FLOAT:
        values = list(values)
        return encoded + _field(5, struct.pack(f'<{len(values)}f', *values))
    if dtype == DT_INT64:
        return encoded + _field(10, b''.join(_varint(int(v)) for v in values))
    raise ValueError(f'unsupported dtype {dtype}')


def tensor_map(field_number: int, tensors: Dict[str, bytes]) -> bytes:
    """A map<string, TensorProto> field: one entry message (key = 1, value = 2) per tensor."""
    return b''.join(_field(field_number, _field(1, key.encode()) + _field(2, value))
                    for key, value in sorted(tensors.items()))


def predict_request(spec: bytes, inputs: Dict[str, bytes], output_filter: Sequence[str] = ()) -> bytes:
    """tensorflow.serving.PredictRequest: model_spec = 1, inputs = 2, output_filter = 3."""
    return _field(1, spec) + tensor_map(2, inputs) + b''.join(_field(3, name.encode()) for name in output_filter)


def predict_response(spec: bytes, outputs: Dict[str, bytes]) -> bytes:
    """tensorflow.serving.PredictResponse: outputs = 1, model_spec = 2."""
    return tensor_map(1, outputs) + _field(2, spec)


def prediction_log(kind: str, request: bytes, response: bytes, spec: bytes, sampling_rate: float,
                   timestamp_secs: int, origin: str = '', inference_micros: Optional[int] = None) -> bytes:
    """tensorflow.serving.PredictionLog of a predict (predict_log = 6) or classify (classify_log = 2)
    call: log_metadata = 1 (model_spec = 1, sampling_config = 2 (sampling_rate = 1),
    timestamp_secs = 4, request_origin = 6, and petpark's INFERENCE_MICROS_FIELD when given), then
    the log (request = 1, response = 2)."""
    metadata = (_field(1, spec) + _field(2, _double_field(1, sampling_rate)) + _int_field(4, timestamp_secs)
                + (_field(6, origin.encode()) if origin else b'')
                + (_varint(INFERENCE_MICROS_FIELD << 3) + _varint(inference_micros) if inference_micros is not None
                   else b''))
    number = {'predict': 6, 'classify': 2}[kind]
    return _field(1, metadata) + _field(number, _field(1, request) + _field(2, response))


def image_prediction_log(model_name: str, version: Optional[int], images: Sequence[bytes],
                         scores: Sequence[Sequence[float]], timestamp_secs: int, origin: str = '',
                         sampling_rate: float = 1.0, signature_name: str = 'serving_image_bytes') -> bytes:
    """The record of classifying encoded images through an image-bytes signature, as `petpark serve`
    logs a REST `{"b64": ...}` or gRPC request and as the edge runtime logs its frames."""
    spec = model_spec(model_name, version, signature_name)
    request = predict_request(spec, {'image_bytes': tensor(DT_STRING, [len(images)], images)})
    width = len(scores[0]) if len(scores) else 0
    response = predict_response(spec, {'scores': tensor(DT_FLOAT, [len(scores), width],
                                                        [value for row in scores for value in row])})
    return prediction_log('predict', request, response, spec, sampling_rate, timestamp_secs, origin)


def varint_field(message: bytes, number: int) -> Optional[int]:
    """The last value of varint field `number` at the top level of an encoded message, None when absent
    (how a reader finds INFERENCE_MICROS_FIELD, which TF Serving's LogMetadata keeps as unknown)."""
    found, at = None, 0
    while at < len(message):
        key, at = _read_varint(message, at)
        wire = key & 7
        if wire == 0:
            value, at = _read_varint(message, at)
            if key >> 3 == number:
                found = value
        elif wire == 1:
            at += 8
        elif wire == 2:
            size, at = _read_varint(message, at)
            at += size
        elif wire == 5:
            at += 4
        else:
            raise ValueError(f'unsupported wire type {wire}')
    if at != len(message):
        raise ValueError('truncated message')
    return found


def _read_varint(data: bytes, at: int) -> Tuple[int, int]:
    value, shift = 0, 0
    while True:
        if at >= len(data) or shift > 63:
            raise ValueError('truncated varint')
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at, shift = at + 1, shift + 7
        if not byte & 0x80:
            return value, at


def tfrecord(data: bytes) -> bytes:
    """One TFRecord: length, masked CRC32C of the length, data, masked CRC32C of the data."""
    def masked(value: bytes) -> bytes:
        crc = crc32c(value)
        return struct.pack('<I', (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)
    length = struct.pack('<Q', len(data))
    return length + masked(length) + data + masked(data)


# -- files ---------------------------------------------------------------------------------------
class RotatingFiles:
    """TFRecord files `<prefix>-<UTC time>-<pid>-<n>.tfrecord` in the prefix's folder, written as
    `.tfrecord.tmp` and renamed when complete (at max_file_bytes or max_file_seconds, or close()).
    Complete files beyond quota_bytes (oldest first) or older than retention_seconds are removed."""

    def __init__(self, filename_prefix: str, max_file_bytes: int = 64 << 20, max_file_seconds: float = 300.0,
                 quota_bytes: int = 1 << 30, retention_seconds: float = 7 * 86400.0, clock=time.time):
        self.folder, self.prefix = os.path.split(os.path.abspath(filename_prefix))
        self.max_file_bytes, self.max_file_seconds = max_file_bytes, max_file_seconds
        self.quota_bytes, self.retention_seconds = quota_bytes, retention_seconds
        self._clock = clock
        self._file = None
        self._path = ''
        self._opened = 0.0
        self._written = 0
        self._sequence = 0

    def remove_stale_partials(self) -> List[str]:
        """Removes `.tmp` files that processes no longer running left (killed mid-write)."""
        removed = []
        for name in os.listdir(self.folder) if os.path.isdir(self.folder) else []:
            if not (name.startswith(self.prefix + '-') and name.endswith(PARTIAL_SUFFIX)):
                continue
            try:
                pid = int(name[:-len(PARTIAL_SUFFIX)].rsplit('-', 2)[1])
                os.kill(pid, 0)
                continue  # its writer still runs
            except (ValueError, IndexError, ProcessLookupError):
                pass
            except PermissionError:
                continue
            try:
                os.remove(os.path.join(self.folder, name))
                removed.append(name)
            except OSError:
                pass
        return removed

    def finish_if_due(self) -> None:
        """Completes the open file once it is max_file_seconds old (called when writes pause)."""
        if self._file is not None and self._clock() - self._opened >= self.max_file_seconds:
            self.finish()

    def write(self, record: bytes) -> None:
        """Appends one record; raises OSError (the caller counts the drop)."""
        self.finish_if_due()
        if self._file is None:
            self._open()
        try:
            written = self._file.write(record)  # unbuffered: what the OS took
            if written != len(record):
                raise OSError(errno.ENOSPC, f'only {written} of {len(record)} bytes written')
        except OSError:
            self._keep_what_was_written()
            raise
        self._written += len(record)
        if self._written >= self.max_file_bytes:
            self.finish()

    def finish(self) -> Optional[str]:
        """Completes the open file (renamed to its final name); returns that name."""
        if self._file is None:
            return None
        final = self._path[:-len('.tmp')]
        try:
            self._file.close()
            os.rename(self._path, final)
        except OSError:
            self._abandon()
            raise
        finally:
            self._file = None
        self._trim()
        return final

    def _open(self) -> None:
        os.makedirs(self.folder, exist_ok=True)
        stamp = time.strftime('%Y%m%dT%H%M%S', time.gmtime(self._clock()))
        self._sequence += 1
        self._path = os.path.join(self.folder, f'{self.prefix}-{stamp}-{os.getpid()}-{self._sequence}{PARTIAL_SUFFIX}')
        self._file = open(self._path, 'xb', buffering=0)
        self._opened, self._written = self._clock(), 0

    def _keep_what_was_written(self) -> None:
        """After a failed write: the file cut back to its last whole record and completed, or removed
        when it holds none, so nothing half-written is left and no logged record is lost."""
        if not self._written:
            self._abandon()
            return
        try:
            self._file.truncate(self._written)
            self.finish()
        except OSError:
            self._abandon()

    def _abandon(self) -> None:
        """Closes and removes the open file."""
        file, self._file = self._file, None
        for step in (lambda: file.close(), lambda: os.remove(self._path)):
            try:
                step()
            except OSError:
                pass

    def complete_files(self) -> List[Tuple[float, int, str]]:
        """(mtime, size, path) of this prefix's complete files, oldest first."""
        found = []
        for name in os.listdir(self.folder):
            if name.startswith(self.prefix + '-') and name.endswith(RECORD_SUFFIX):
                path = os.path.join(self.folder, name)
                try:
                    info = os.stat(path)
                except FileNotFoundError:
                    continue
                found.append((info.st_mtime, info.st_size, path))
        return sorted(found)

    def _trim(self) -> None:
        files = self.complete_files()
        total = sum(size for _, size, _ in files)
        cutoff = self._clock() - self.retention_seconds
        for mtime, size, path in files:
            if total <= self.quota_bytes and mtime >= cutoff:
                continue
            try:
                os.remove(path)
                total -= size
            except FileNotFoundError:
                pass


def _reason(error: OSError) -> str:
    return {errno.ENOSPC: 'disk_full', errno.EDQUOT: 'disk_full', errno.EROFS: 'read_only',
            errno.EACCES: 'read_only', errno.EPERM: 'read_only'}.get(error.errno, 'write_error')


class RequestLogger:
    """Samples requests and writes their records from a background thread.

    `log(model_name, build)` decides sampling first; only a sampled request's `build()` (which
    returns the encoded PredictionLog, or a tuple of them written together into one file) runs, in
    the writer thread. After a failed write (a full disk, a read-only folder), records are dropped
    unbuilt for `pause_seconds`, then one write is tried again: a folder that stays unwritable costs
    the request path a clock read, not a record built and thrown away. Counts: `logged[model]` and
    `dropped[(model, reason)]`.
    """

    def __init__(self, files: RotatingFiles, sampling_rate: float, max_queued: int = 1024,
                 random_fraction: Callable[[], float] = random.random, pause_seconds: float = 1.0,
                 clock: Callable[[], float] = time.monotonic):
        if not 0.0 <= sampling_rate <= 1.0:
            raise ValueError(f'sampling_rate must be between 0 and 1, got {sampling_rate}')
        self.files, self.sampling_rate = files, sampling_rate
        self._random = random_fraction
        self._queue: 'queue.Queue' = queue.Queue(maxsize=max_queued)
        self._lock = threading.Lock()
        self._pause_seconds, self._clock = pause_seconds, clock
        self._paused_until, self._pause_reason = float('-inf'), ''
        self.logged: Dict[str, int] = collections.Counter()
        self.dropped: Dict[Tuple[str, str], int] = collections.Counter()
        self._last_error = 0.0
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name='request-log-writer')
        self._thread.start()

    def sampled(self) -> bool:
        return self.sampling_rate > 0 and self._random() < self.sampling_rate

    def log(self, model_name: str, build: Callable[[], bytes], sampled: Optional[bool] = None) -> bool:
        """Queues a sampled request's record builder; False when not sampled or dropped. `sampled`:
        the caller already decided (it drew sampled() before preparing the builder)."""
        if not (self.sampled() if sampled is None else sampled):
            return False
        if self._paused(model_name):
            return False
        try:
            self._queue.put_nowait((model_name, build))
        except queue.Full:
            self._count_drop(model_name, 'queue_full')
            return False
        return True

    def _paused(self, model_name: str) -> bool:
        """True (and the record counted as dropped) while writes are paused after a failed one."""
        if self._clock() >= self._paused_until:
            return False
        self._count_drop(model_name, self._pause_reason)
        return True

    def _count_drop(self, model_name: str, reason: str) -> None:
        with self._lock:
            self.dropped[(model_name, reason)] += 1

    def _run(self) -> None:
        try:
            self.files.remove_stale_partials()
        except OSError as e:
            self._warn(f'request log: cannot list {self.files.folder}: {e.strerror or e}')
        while True:
            try:
                item = self._queue.get(timeout=1.0)
            except queue.Empty:
                if self._stopped.is_set():
                    return
                item = ()
            if item is None:
                return
            try:
                if item:
                    self._write(*item)
                else:
                    self.files.finish_if_due()
            except Exception as e:  # the writer thread never dies: report, go on with the next record
                self._warn(f'request log: {type(e).__name__}: {e}')

    def _write(self, model_name: str, build: Callable[[], Union[bytes, Tuple[bytes, ...]]]) -> None:
        if self._paused(model_name):  # queued before the failed write: dropped like those after it
            return
        try:
            built = build()
            group = built if isinstance(built, tuple) else (built,)  # a group lands together, in one file
            record = b''.join(tfrecord(data) for data in group)
        except Exception as e:  # a record that cannot be encoded is dropped and counted, never fatal
            self._count_drop(model_name, 'unencodable')
            self._warn(f'request log: a record could not be encoded ({type(e).__name__}: {e})')
            return
        try:
            self.files.write(record)
        except OSError as e:
            self._pause_reason = _reason(e)
            self._paused_until = self._clock() + self._pause_seconds
            self._count_drop(model_name, self._pause_reason)
            self._warn(f'request log: dropping records: {e.strerror or e} ({self.files.folder})')
            return
        with self._lock:
            self.logged[model_name] += len(group)

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_error >= 10.0:  # at most once every 10 s: a full disk fails every record
            self._last_error = now
            _log.warning(message)

    def close(self, timeout: float = 10.0) -> None:
        """Writes what is queued, completes the open file and stops the writer."""
        self._stopped.set()
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            pass
        self._thread.join(timeout)
        try:
            self.files.finish()
        except OSError as e:
            self._warn(f'request log: could not complete the last file: {e.strerror or e}')

    def counts(self) -> Tuple[Dict[str, int], Dict[Tuple[str, str], int]]:
        with self._lock:
            return dict(self.logged), dict(self.dropped)
