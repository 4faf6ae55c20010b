"""The edge runtime: classify camera images and video frames with an exported ONNX model, on a box
with no TensorFlow. It imports only NumPy, Pillow, onnxruntime and (for videos) PyAV, and nothing
of petpark, so this one file and `pip install onnxruntime numpy pillow av` run it anywhere:

    python edge_runtime.py --model-dir edge/petpark [--version V] [--int8] [--every N] IMAGE_OR_VIDEO...

Preprocessing follows the version's metadata.json exactly: decode to RGB (Pillow, libjpeg-turbo),
resize the float pixels with an antialiased bilinear filter to the model's size, as
tf.image.resize(antialias=True) does in the Transform graph (they agree to 1e-5), round, clip,
divide. Pillow and TensorFlow decode some JPEGs a few levels apart per pixel; the README gives the effect.

With --log-dir, classified frames are logged (sampled) as `petpark serve` logs requests, PredictionLog
records in TFRecord files, for `petpark monitor`: copy serving/request_log.py beside this file.

Nothing in the model folder is trusted: metadata.json is checked against METADATA_SCHEMA (types and
bounds) and the model file against its sha256 in it before onnxruntime reads it; an image or video
frame over MAX_IMAGE_PIXELS (the server's default bound) is refused from its header, before decoding.
"""
import argparse
import hashlib
import io
import json
import math
import os
import re
import sys
import time
import warnings
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import onnxruntime
from PIL import Image, UnidentifiedImageError

FORMAT = 'petpark-edge/1'
METADATA_FILE = 'metadata.json'
VIDEO_SUFFIXES = ('.mp4', '.avi', '.mkv', '.mov', '.webm', '.m4v')
# The server's default max_image_pixels (serving/limits.py; a test keeps them equal): width x height
# of an image or video frame, read from its header before anything is decoded.
MAX_IMAGE_PIXELS = 40_000_000
MAX_METADATA_BYTES = 1 << 20
MAX_MODEL_BYTES = 2 << 30  # protobuf's own bound on one ONNX file
MAX_MODEL_SIDE = 2048  # resize height or width: a 2048 x 2048 float image is 50 MB


class EdgeError(Exception):
    """A problem with the model folder or an input, said in one line."""


# metadata.json's schema: nested dicts of fields; each leaf says what a value must be when it is not.
Check = Callable[[Any], Optional[str]]


def _integer(low: int, high: int) -> Check:
    return lambda value: None if type(value) is int and low <= value <= high else f'an integer from {low} to {high}'


def _number(low: float, high: float) -> Check:
    def check(value):
        if type(value) in (int, float) and math.isfinite(value) and low <= value <= high:
            return None
        return f'a number from {low:g} to {high:g}'
    return check


def _text(longest: int) -> Check:
    return lambda value: None if isinstance(value, str) and 0 < len(value) <= longest else \
        f'a text of 1 to {longest} characters'


def _boolean(value: Any) -> Optional[str]:
    return None if isinstance(value, bool) else 'true or false'


def _implemented(*allowed: Any) -> Check:
    """Values this runtime implements (a type-exact match: 1 is not true)."""
    def check(value):
        if any(type(value) is type(a) and value == a for a in allowed):
            return None
        return ' or '.join(json.dumps(a) for a in allowed) + ' (all this runtime implements)'
    return check


def _file_name(value: Any) -> Optional[str]:
    if isinstance(value, str) and re.fullmatch(r'[A-Za-z0-9_][A-Za-z0-9._-]{0,99}', value):
        return None
    return 'a file name in the version folder (letters, digits, ".", "_", "-"; no folders)'


def _optional(check: Check) -> Check:
    def either(value):
        problem = None if value is None else check(value)
        return f'{problem} or null' if problem else None
    return either


def _names(value: Any) -> Optional[str]:
    problem = 'a list of 2 to 1000 distinct texts of 1 to 100 characters'
    if not isinstance(value, list) or not 2 <= len(value) <= 1000 or len(set(map(str, value))) != len(value):
        return problem
    return problem if any(_text(100)(name) for name in value) else None


def _digests(value: Any) -> Optional[str]:
    problem = 'an object of at most 10 file names, each with its sha256 as 64 lower-case hex digits'
    if not isinstance(value, dict) or len(value) > 10:
        return problem
    good = all(_file_name(name) is None and isinstance(digest, str) and re.fullmatch(r'[0-9a-f]{64}', digest)
               for name, digest in value.items())
    return None if good else problem


def _levels(value: Any) -> Optional[str]:
    problem = 'a [low, high] pair of pixel levels with 0 <= low < high <= 65535'
    if not isinstance(value, list) or len(value) != 2 or any(_number(0, 65535)(level) for level in value):
        return problem
    return None if value[0] < value[1] else problem


METADATA_SCHEMA: Dict[str, Any] = {
    'version': _text(64),
    'files': {'fp32': _file_name, 'int8': _optional(_file_name)},
    'sha256': _digests,
    'input': {
        'name': _text(200),
        'dtype': _implemented('float32'),
        'layout': _implemented('NHWC'),
        'colour_order': _implemented('RGB'),
        'resize': {'height': _integer(1, MAX_MODEL_SIDE), 'width': _integer(1, MAX_MODEL_SIDE),
                   'method': _implemented('bilinear'), 'antialias': _implemented(True),
                   'keep_aspect_ratio': _implemented(False)},
        'round': _boolean,
        'scale': {'divide_by': _number(0.001, 65535), 'clip': _levels},
    },
    'output': {'class_names': _names, 'positive_class': _text(100), 'decision_threshold': _number(0, 1)},
    'quantization': {'reason': _text(1000)},
}


def _shown(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + '...'


def check_fields(value: Any, schema: Any = METADATA_SCHEMA, field: str = '') -> None:
    """EdgeError naming the first field of `value` that `schema` does not allow."""
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            raise EdgeError(f'{field or "the file"} must be a JSON object, got {_shown(value)}')
        for key, inner in schema.items():
            where = f'{field}.{key}' if field else key
            if key not in value:
                raise EdgeError(f'{where} is missing')
            check_fields(value[key], inner, where)
        return
    problem = schema(value)
    if problem:
        raise EdgeError(f'{field} must be {problem}, got {_shown(value)}')


def check_metadata(metadata: Any) -> None:
    """The schema, then what relates fields to each other."""
    check_fields(metadata)
    if metadata['output']['positive_class'] not in metadata['output']['class_names']:
        raise EdgeError(f'output.positive_class {_shown(metadata["output"]["positive_class"])} is not one of '
                        f'output.class_names')


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pixel_limit_error(name: str, what: str, width: int, height: int) -> Optional[EdgeError]:
    """The server's max_image_pixels message, worded as `petpark serve` words it, for `what` over the bound;
    None within it."""
    if width * height <= MAX_IMAGE_PIXELS:
        return None
    return EdgeError(f'{name}: the pixel count of {what} is {width * height} ({width} x {height}), above the edge '
                     f'runtime limit max_image_pixels={MAX_IMAGE_PIXELS}')


def version_folder(model_dir: str, version: Optional[str]) -> str:
    """`<model_dir>/<version>`, or the newest numeric folder holding a metadata.json."""
    if not os.path.isdir(model_dir):
        raise EdgeError(f'{model_dir}: no such model folder')
    if version is not None:
        folder = os.path.join(model_dir, str(version))
        if not os.path.isfile(os.path.join(folder, METADATA_FILE)):
            raise EdgeError(f'{folder}: no {METADATA_FILE}; not a published version')
        return folder
    complete = [name for name in os.listdir(model_dir)
                if name.isdigit() and os.path.isfile(os.path.join(model_dir, name, METADATA_FILE))]
    if not complete:
        raise EdgeError(f'{model_dir}: no version folder with a {METADATA_FILE}')
    return os.path.join(model_dir, max(complete, key=int))


class EdgeModel:
    """One published version: its metadata, preprocessing and an onnxruntime session."""

    def __init__(self, model_dir: str, version: Optional[str] = None, int8: bool = False, threads: int = 1):
        self.folder = version_folder(model_dir, version)
        self.metadata = self._read_metadata(os.path.join(self.folder, METADATA_FILE))
        file_name = self.metadata['files']['int8' if int8 else 'fp32']
        if file_name is None:
            raise EdgeError(f'{self.folder}: version {self.metadata["version"]} ships no INT8 model '
                            f'({self.metadata["quantization"]["reason"]})')
        model = self._checked_model(file_name)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        try:
            self.session = onnxruntime.InferenceSession(model, options, providers=['CPUExecutionProvider'])
        except Exception as e:  # onnxruntime raises its own exception types for bad files
            raise EdgeError(f'{self.folder}/{file_name}: not a loadable ONNX model ({e})') from None
        spec = self.metadata['input']
        self._check_input(file_name, spec)
        self.size = (spec['resize']['width'], spec['resize']['height'])
        self.round_levels = spec['round']
        self.clip = tuple(spec['scale']['clip'])
        self.divide_by = spec['scale']['divide_by']
        self.class_names = self.metadata['output']['class_names']
        self.positive = self.class_names.index(self.metadata['output']['positive_class'])
        self.threshold = self.metadata['output']['decision_threshold']

    @staticmethod
    def _read_metadata(path: str) -> Dict[str, Any]:
        """metadata.json, whole and within METADATA_SCHEMA; EdgeError naming the field otherwise."""
        try:
            if os.path.getsize(path) > MAX_METADATA_BYTES:
                raise EdgeError(f'{path}: over {MAX_METADATA_BYTES} bytes; not a metadata file')
            with open(path) as f:
                metadata = json.load(f)
        except (OSError, ValueError) as e:
            raise EdgeError(f'{path}: unreadable ({e})') from None
        if not isinstance(metadata, dict) or metadata.get('format') != FORMAT:
            found = metadata.get('format') if isinstance(metadata, dict) else metadata
            raise EdgeError(f'{path}: format {_shown(found)}, this runtime reads {FORMAT!r}')
        try:
            check_metadata(metadata)
        except EdgeError as e:
            raise EdgeError(f'{path}: {e}') from None
        return metadata

    def _checked_model(self, file_name: str) -> bytes:
        """The model file's bytes, once they match their sha256 in metadata.json (read once: what was
        checked is what onnxruntime loads)."""
        path = os.path.join(self.folder, file_name)
        expected = self.metadata['sha256'].get(file_name)
        if expected is None:
            raise EdgeError(f'{self.folder}/{METADATA_FILE}: sha256 has no digest for {file_name}; not loaded')
        try:
            if os.path.getsize(path) > MAX_MODEL_BYTES:
                raise EdgeError(f'{path}: over {MAX_MODEL_BYTES} bytes; not loaded')
            with open(path, 'rb') as f:
                data = f.read()
        except OSError as e:
            raise EdgeError(f'{path}: unreadable ({e.strerror})') from None
        actual = sha256_of(data)
        if actual != expected:
            raise EdgeError(f'{path}: sha256 {actual} differs from {expected} in {METADATA_FILE} '
                            '(damaged or replaced); not loaded')
        return data

    def _check_input(self, file_name: str, spec: Dict[str, Any]) -> None:
        """The model takes input.name as [batch, height, width, 3], as metadata.json says."""
        inputs = {i.name: i.shape for i in self.session.get_inputs()}
        if spec['name'] not in inputs:
            raise EdgeError(f'{self.folder}/{METADATA_FILE}: input.name {spec["name"]!r} is not an input of '
                            f'{file_name} (it has {sorted(inputs)})')
        shape, expected = inputs[spec['name']], [spec['resize']['height'], spec['resize']['width'], 3]
        if len(shape) != 4 or any(isinstance(d, int) and d != e for d, e in zip(shape[1:], expected)):
            raise EdgeError(f'{self.folder}/{METADATA_FILE}: input.resize is {expected[0]} x {expected[1]} but '
                            f'{file_name} takes {shape}')

    def pixels(self, rgb: np.ndarray) -> np.ndarray:
        """uint8 RGB [H, W, 3] -> float32 [h, w, 3], as the Transform graph computes it (resized, rounded
        to whole pixel values when input.round says so, clipped, divided)."""
        channels = [np.asarray(Image.fromarray(rgb[..., c].astype(np.float32), mode='F').resize(self.size, Image.BILINEAR))
                    for c in range(3)]
        resized = np.stack(channels, axis=-1)
        if self.round_levels:
            resized = np.round(resized)
        return (np.clip(resized, *self.clip) / self.divide_by).astype(np.float32)

    def scores(self, rgb_images: Sequence[np.ndarray]) -> np.ndarray:
        batch = np.stack([self.pixels(rgb) for rgb in rgb_images])
        return self.session.run(None, {self.metadata['input']['name']: batch})[0]

    def label(self, scores: np.ndarray) -> Tuple[str, float]:
        """(class name, P(positive class)) for one row of scores."""
        positive = float(scores[self.positive])
        if len(self.class_names) == 2:
            name = self.class_names[self.positive] if positive >= self.threshold else self.class_names[1 - self.positive]
        else:
            name = self.class_names[int(np.argmax(scores))]
        return name, positive


def decode_image(path: str) -> np.ndarray:
    """The file's pixels as uint8 RGB [H, W, 3] (Pillow; no EXIF rotation, as TensorFlow decodes),
    once its header says it is within MAX_IMAGE_PIXELS."""
    try:
        with warnings.catch_warnings():  # the bound below is the check; Pillow's warning would be noise
            warnings.simplefilter('ignore', Image.DecompressionBombWarning)
            image = Image.open(path)
        with image:
            too_large = pixel_limit_error(path, 'the image', *image.size)
            if too_large:
                raise too_large
            return np.asarray(image.convert('RGB'))
    except Image.DecompressionBombError:  # Pillow refuses to even open it: over twice its own bound
        raise EdgeError(f'{path}: the pixel count of the image is over {2 * Image.MAX_IMAGE_PIXELS}, above the edge '
                        f'runtime limit max_image_pixels={MAX_IMAGE_PIXELS}') from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise EdgeError(f'{path}: not a readable image ({e})') from None


def video_frames(path: str, every: int) -> Iterator[Tuple[int, np.ndarray]]:
    """(frame index, uint8 RGB) for every `every`-th frame of a video file (PyAV); the stream's
    size, and each frame's, is checked against MAX_IMAGE_PIXELS before the frame is converted."""
    import av
    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            too_large = pixel_limit_error(path, 'a frame', stream.codec_context.width, stream.codec_context.height)
            if too_large:
                raise too_large
            for index, frame in enumerate(container.decode(stream)):
                too_large = pixel_limit_error(f'{path}#frame={index}', 'the frame', frame.width, frame.height)
                if too_large:
                    raise too_large
                if index % every == 0:
                    yield index, frame.to_ndarray(format='rgb24')
    except (av.FFmpegError, OSError, ValueError, IndexError) as e:
        raise EdgeError(f'{path}: not a readable video ({e})') from None


def frames(path: str, every: int) -> Iterator[Tuple[str, np.ndarray]]:
    """(name, pixels) for an image, or for each sampled frame of a video; errors as EdgeError."""
    if not os.path.isfile(path):
        raise EdgeError(f'{path}: no such file')
    if path.lower().endswith(VIDEO_SUFFIXES):
        for index, rgb in video_frames(path, every):
            yield f'{path}#frame={index}', rgb
    else:
        yield path, decode_image(path)


def request_logger(log_dir: str, model_name: str, sampling_rate: float):
    """petpark's request logger (serving/request_log.py: installed with petpark, or copied beside
    this file), writing `<log_dir>/<model_name>-*.tfrecord` as `petpark serve` does."""
    try:
        from petpark.serving import request_log
    except ImportError:  # on an edge box: the file copied beside this one
        import request_log
    return request_log, request_log.RequestLogger(
        request_log.RotatingFiles(os.path.join(log_dir, model_name)), sampling_rate)


def encoded_frame(path: str, rgb: np.ndarray) -> bytes:
    """What a request would have carried: an image file's own bytes, a video frame as a JPEG."""
    if '#frame=' not in path:
        with open(path, 'rb') as f:
            return f.read()
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format='JPEG', quality=90)
    return buffer.getvalue()


def record_builder(request_log, model_name: str, version: int, item: Tuple[str, np.ndarray], scores: List[float],
                   camera: str, sampling_rate: float) -> Callable[[], bytes]:
    """The PredictionLog of one classified frame, built later by the logger's writer thread."""
    name, rgb, stamp = item[0], item[1], int(time.time())
    return lambda: request_log.image_prediction_log(model_name, version, [encoded_frame(name, rgb)], [scores], stamp,
                                                    camera, sampling_rate)


def _sampling_rate(text: str) -> float:
    try:
        rate = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected a rate between 0 and 1, got {text!r}') from None
    if not 0.0 <= rate <= 1.0:
        raise argparse.ArgumentTypeError(f'must be between 0 and 1, got {text}')
    return rate


def add_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--model-dir', required=True, help='edge model folder: <home>/edge/<model_name>')
    parser.add_argument('--version', help='version folder (default: the newest)')
    parser.add_argument('--int8', action='store_true', help='use the INT8 model (when the version ships one)')
    parser.add_argument('--every', type=int, default=1, metavar='N', help='classify every Nth video frame')
    parser.add_argument('--threads', type=int, default=1, help='onnxruntime threads (an edge box: 1)')
    parser.add_argument('--log-dir', help='write sampled requests as PredictionLog TFRecords here, as petpark serve '
                                          'does, for `petpark monitor` (needs request_log.py beside this file)')
    parser.add_argument('--log-sampling', type=_sampling_rate, default=1.0, metavar='RATE',
                        help='share of frames logged (default 1.0)')
    parser.add_argument('--camera', default='', help="the camera these frames come from (the records' request_origin)")
    parser.add_argument('files', nargs='+', metavar='IMAGE_OR_VIDEO')


def run(args: argparse.Namespace, out=None, err=None) -> int:
    """Prints `name  class  P(positive)  latency` per image or frame, then a summary (to `out`, errors to
    `err`: sys.stdout and sys.stderr as they are at the call). Returns 0, 1 when some input could not be
    read (the others are still classified), 2 for the model."""
    out, err = out or sys.stdout, err or sys.stderr
    if args.every < 1:
        print(f'edge-predict: --every must be at least 1, got {args.every}', file=err)
        return 2
    try:
        model = EdgeModel(args.model_dir, args.version, args.int8, args.threads)
    except EdgeError as e:
        print(f'edge-predict: {e}', file=err)
        return 2
    positive = model.class_names[model.positive]
    print(f'model {model.folder} ({"INT8" if args.int8 else "FP32"}), P({positive})', file=out)
    model_name, version = model.metadata['model_name'], int(model.metadata['version'])
    request_log, logger = request_logger(args.log_dir, model_name, args.log_sampling) if args.log_dir else (None, None)
    failures, latencies = 0, []
    started = time.perf_counter()
    for path in args.files:
        stream = frames(path, args.every)
        try:
            while True:
                start = time.perf_counter()
                item = next(stream, None)
                if item is None:
                    break
                scores = model.scores([item[1]])[0]
                label, probability = model.label(scores)
                latencies.append(time.perf_counter() - start)
                print(f'{item[0]}\t{label}\t{probability:.3f}\t{latencies[-1] * 1000:.1f} ms', file=out)
                if logger is not None:
                    logger.log(model_name, record_builder(request_log, model_name, version, item, scores.tolist(),
                                                          args.camera, args.log_sampling))
        except EdgeError as e:
            print(f'edge-predict: {e}', file=err)
            failures += 1
    elapsed = time.perf_counter() - started
    if logger is not None:
        logger.close()
        logged, dropped = logger.counts()
        print(f'request log: {sum(logged.values())} frames logged to {args.log_dir}, '
              f'{sum(dropped.values())} dropped', file=out)
    if latencies:
        print(f'{len(latencies)} images/frames in {elapsed:.2f} s: {len(latencies) / elapsed:.1f} frames/s, '
              f'median {np.median(latencies) * 1000:.1f} ms each (decode, resize and model)', file=out)
    return 1 if failures else 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='edge-predict', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_flags(parser)
    return run(parser.parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
