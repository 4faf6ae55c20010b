"""The edge runtime: classify camera images and video frames with an exported ONNX model, on a box
with no TensorFlow. It imports only NumPy, Pillow, onnxruntime and (for videos) PyAV, and nothing
of petpark, so this one file and `pip install onnxruntime numpy pillow av` run it anywhere:

    python edge_runtime.py --model-dir edge/petpark [--version V] [--int8] [--every N] IMAGE_OR_VIDEO...

Preprocessing follows the version's metadata.json exactly: decode to RGB (Pillow, libjpeg-turbo),
resize the float pixels with an antialiased bilinear filter to the model's size, as
tf.image.resize(antialias=True) does in the Transform graph (they agree to 1e-5), divide by 255.
Pillow and TensorFlow decode some JPEGs a few levels apart per pixel; the README gives the effect.
"""
import argparse
import json
import os
import sys
import time
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import onnxruntime
from PIL import Image, UnidentifiedImageError

FORMAT = 'petpark-edge/1'
METADATA_FILE = 'metadata.json'
VIDEO_SUFFIXES = ('.mp4', '.avi', '.mkv', '.mov', '.webm', '.m4v')


class EdgeError(Exception):
    """A problem with the model folder or an input, said in one line."""


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
        try:
            with open(os.path.join(self.folder, METADATA_FILE)) as f:
                self.metadata = json.load(f)
        except (OSError, ValueError) as e:
            raise EdgeError(f'{self.folder}/{METADATA_FILE}: unreadable ({e})') from None
        if self.metadata.get('format') != FORMAT:
            raise EdgeError(f'{self.folder}/{METADATA_FILE}: format {self.metadata.get("format")!r}, '
                            f'this runtime reads {FORMAT!r}')
        file_name = self.metadata['files']['int8' if int8 else 'fp32']
        if file_name is None:
            raise EdgeError(f'{self.folder}: version {self.metadata["version"]} ships no INT8 model '
                            f'({self.metadata["quantization"]["reason"]})')
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        try:
            self.session = onnxruntime.InferenceSession(os.path.join(self.folder, file_name), options,
                                                        providers=['CPUExecutionProvider'])
        except Exception as e:  # onnxruntime raises its own exception types for bad files
            raise EdgeError(f'{self.folder}/{file_name}: not a loadable ONNX model ({e})') from None
        spec = self.metadata['input']
        self.size = (spec['resize']['width'], spec['resize']['height'])
        self.scale = spec['scale']['divide_by']
        self.class_names = self.metadata['output']['class_names']
        self.positive = self.class_names.index(self.metadata['output']['positive_class'])
        self.threshold = self.metadata['output']['decision_threshold']

    def pixels(self, rgb: np.ndarray) -> np.ndarray:
        """uint8 RGB [H, W, 3] -> float32 [h, w, 3] in [0, 1], as the Transform graph computes it
        (resized, rounded to whole pixel values, scaled)."""
        channels = [np.asarray(Image.fromarray(rgb[..., c].astype(np.float32), mode='F').resize(self.size, Image.BILINEAR))
                    for c in range(3)]
        return (np.clip(np.round(np.stack(channels, axis=-1)), 0.0, self.scale) / self.scale).astype(np.float32)

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
    """The file's pixels as uint8 RGB [H, W, 3] (Pillow; no EXIF rotation, as TensorFlow decodes)."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert('RGB'))
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise EdgeError(f'{path}: not a readable image ({e})') from None


def video_frames(path: str, every: int) -> Iterator[Tuple[int, np.ndarray]]:
    """(frame index, uint8 RGB) for every `every`-th frame of a video file (PyAV)."""
    import av
    try:
        with av.open(path) as container:
            for index, frame in enumerate(container.decode(video=0)):
                if index % every == 0:
                    yield index, frame.to_ndarray(format='rgb24')
    except (av.FFmpegError, OSError, ValueError) as e:
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


def add_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--model-dir', required=True, help='edge model folder: <home>/edge/<model_name>')
    parser.add_argument('--version', help='version folder (default: the newest)')
    parser.add_argument('--int8', action='store_true', help='use the INT8 model (when the version ships one)')
    parser.add_argument('--every', type=int, default=1, metavar='N', help='classify every Nth video frame')
    parser.add_argument('--threads', type=int, default=1, help='onnxruntime threads (an edge box: 1)')
    parser.add_argument('files', nargs='+', metavar='IMAGE_OR_VIDEO')


def run(args: argparse.Namespace, out=sys.stdout, err=sys.stderr) -> int:
    """Prints `name  class  P(positive)  latency` per image or frame, then a summary.
    Returns 0, 1 when some input could not be read (the others are still classified), 2 for the model."""
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
                label, probability = model.label(model.scores([item[1]])[0])
                latencies.append(time.perf_counter() - start)
                print(f'{item[0]}\t{label}\t{probability:.3f}\t{latencies[-1] * 1000:.1f} ms', file=out)
        except EdgeError as e:
            print(f'edge-predict: {e}', file=err)
            failures += 1
    elapsed = time.perf_counter() - started
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
