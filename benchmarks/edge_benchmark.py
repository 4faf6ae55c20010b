"""Edge benchmark: prints numbers, asserts nothing.

For each petpark home given (default: petpark_home, the demo model), on its newest pushed
SavedModel and the ONNX export of the same version:
- batch-1 and batch-32 latency (p50/p99) of the SavedModel's float-pixel signature in-process,
  ONNX FP32 and ONNX INT8 (onnxruntime, one thread, as on an edge box);
- file sizes, and INT8 against FP32 accuracy on the photos of --photos (default: ../shared
  validation/), labelled by folder;
- the edge runtime from the JPEG file on one core (decode, resize, model): frames/s;
- agreement of the edge runtime (Pillow decoder) with the SavedModel's encoded-image signature
  (TensorFlow decoder) on the class, and the largest probability difference; and how far the
  two decoders' pixels differ;
- the installed size of the `edge` extra alone (its distributions and theirs, as installed here).

    .venv/bin/python benchmarks/edge_benchmark.py [--home petpark_home] [--home /tmp/petpark_real] [--photos DIR]
"""
import argparse
import glob
import importlib.metadata
import os
import re
import statistics
import sys
import time

import numpy as np

from petpark.pipeline import console

console.quiet_libraries(numbers_only=True)

import onnxruntime  # noqa: E402
import tensorflow as tf  # noqa: E402

from petpark.modules import features  # noqa: E402
from petpark.serving import edge_runtime  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_PHOTOS = os.path.join(REPO, '..', 'shared', 'data', 'cats_and_dogs_filtered', 'validation')
EDGE_EXTRA = ('onnxruntime', 'numpy', 'pillow', 'av')


def percentiles(seconds):
    return statistics.median(seconds) * 1000, float(np.percentile(seconds, 99)) * 1000


def timed(call, repeat):
    call()
    spent = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        spent.append(time.perf_counter() - start)
    return percentiles(spent)


def extra_size() -> float:
    """MB installed for the edge extra's distributions and everything they require."""
    seen, pending, total = set(), list(EDGE_EXTRA), 0
    while pending:
        name = re.sub(r'[-_.]+', '-', pending.pop()).lower()
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        total += sum(os.path.getsize(dist.locate_file(f)) for f in dist.files or [] if os.path.isfile(dist.locate_file(f)))
        pending += [re.match(r'[A-Za-z0-9_.-]+', r).group(0) for r in dist.requires or [] if 'extra ==' not in r]
    return total / 1e6, sorted(seen)


def labelled_photos(folder: str, limit: int):
    found = []
    for path in sorted(glob.glob(os.path.join(folder, '*', '*.jpg'))):
        name = os.path.basename(os.path.dirname(path)).rstrip('s')
        if name in features.LABELS:
            found.append((path, features.LABELS.index(name)))
    step = max(1, len(found) // limit) if limit else 1
    return found[::step][:limit] if limit else found


def benchmark(home: str, photos, repeat: int) -> None:
    serving = os.path.join(home, 'serving', 'petpark')
    versions = sorted((v for v in os.listdir(serving) if v.isdigit()), key=int) if os.path.isdir(serving) else []
    if not versions:
        print(f'{home}: no pushed model; skipped')
        return
    version = versions[-1]
    edge_dir = os.path.join(home, 'edge', 'petpark')
    saved = tf.saved_model.load(os.path.join(serving, version))
    pixels_signature = saved.signatures[features.PIXELS_SIGNATURE]
    fp32 = edge_runtime.EdgeModel(edge_dir, version, threads=1)
    int8 = edge_runtime.EdgeModel(edge_dir, version, int8=True, threads=1) if fp32.metadata['files']['int8'] else None
    size = fp32.size
    print(f'\n{home}: version {version}, input {size[0]} px, files: '
          + ', '.join(f'{name} {os.path.getsize(os.path.join(fp32.folder, name)) / 1e6:.2f} MB'
                      for name in filter(None, fp32.metadata['files'].values()))
          + f"; INT8: {fp32.metadata['quantization']['reason']}")
    print('  latency (ms)        batch 1 p50   p99    batch 32 p50   p99   per image at 32')
    for batch in (1, 32):
        x = np.random.RandomState(0).rand(batch, size[1], size[0], 3).astype(np.float32)
        rows = [('SavedModel in-process', lambda x=x: pixels_signature(pixels=tf.constant(x))),
                ('ONNX FP32 (1 thread)', lambda x=x: fp32.session.run(None, {'pixels': x}))]
        if int8:
            rows.append(('ONNX INT8 (1 thread)', lambda x=x: int8.session.run(None, {'pixels': x})))
        for name, call in rows:
            p50, p99 = timed(call, repeat if batch == 1 else max(5, repeat // 10))
            print(f'  {name:<22} batch {batch:>2}: p50 {p50:8.2f}  p99 {p99:8.2f}' +
                  (f'  ({p50 / 32:.2f} ms/image)' if batch == 32 else ''))
    if not photos:
        print('  no labelled photos: accuracy and agreement skipped')
        return
    rgb = [edge_runtime.decode_image(path) for path, _ in photos]
    labels = np.array([label for _, label in photos])
    scores = {'fp32': np.concatenate([fp32.scores(rgb[i:i + 32]) for i in range(0, len(rgb), 32)])}
    if int8:
        scores['int8'] = np.concatenate([int8.scores(rgb[i:i + 32]) for i in range(0, len(rgb), 32)])
    accuracy = {k: float((v.argmax(1) == labels).mean()) for k, v in scores.items()}
    print(f'  accuracy on {len(photos)} photos: ' + ', '.join(f'{k.upper()} {v:.4f}' for k, v in accuracy.items())
          + (f' (INT8 - FP32: {accuracy["int8"] - accuracy["fp32"]:+.4f})' if int8 else ''))
    tf_scores = np.concatenate([saved.signatures[features.IMAGE_BYTES_SIGNATURE](image_bytes=tf.constant(
        [open(p, 'rb').read() for p, _ in photos[i:i + 32]]))['scores'].numpy() for i in range(0, len(photos), 32)])
    agree = (tf_scores[:, 1] >= 0.5) == (scores['fp32'][:, 1] >= 0.5)
    print(f'  edge runtime (Pillow) vs SavedModel image signature (TF decoder): same class on {agree.sum()} of '
          f'{len(agree)} ({agree.mean():.2%}); largest P(dog) difference {np.abs(tf_scores - scores["fp32"]).max():.4f}')
    decoded = [np.abs(tf.io.decode_jpeg(open(p, 'rb').read(), channels=3).numpy().astype(int) - r.astype(int))
               for (p, _), r in zip(photos[:200], rgb[:200])]
    print(f'  JPEG decoders, Pillow vs TensorFlow, {len(decoded)} photos: largest pixel difference '
          f'{max(d.max() for d in decoded)}/255, mean {np.mean([d.mean() for d in decoded]):.3f}/255')
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    start = time.perf_counter()
    for path, _ in photos[:200]:
        fp32.label(fp32.scores([edge_runtime.decode_image(path)])[0])
    rate = min(200, len(photos)) / (time.perf_counter() - start)
    print(f'  edge runtime from the JPEG file, one core, FP32: {rate:.1f} frames/s')
    if int8:
        start = time.perf_counter()
        for path, _ in photos[:200]:
            int8.label(int8.scores([edge_runtime.decode_image(path)])[0])
        rate = min(200, len(photos)) / (time.perf_counter() - start)
        print(f'  edge runtime from the JPEG file, one core, INT8: {rate:.1f} frames/s')
    os.sched_setaffinity(0, set(range(os.cpu_count())))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--home', action='append', help='a petpark home with a pushed model and its edge export')
    parser.add_argument('--photos', default=DEFAULT_PHOTOS, help='<class>/*.jpg photos for accuracy and agreement')
    parser.add_argument('--limit', type=int, default=0, help='photos to use (0: all)')
    parser.add_argument('--repeat', type=int, default=200)
    args = parser.parse_args()
    megabytes, names = extra_size()
    print(f'edge extra {list(EDGE_EXTRA)}: {megabytes:.0f} MB installed with what it requires ({", ".join(names)})')
    print(f'onnxruntime {onnxruntime.__version__}, TensorFlow {tf.__version__}, {os.cpu_count()} cores')
    photos = labelled_photos(args.photos, args.limit) if os.path.isdir(args.photos) else []
    for home in args.home or [os.path.join(REPO, 'petpark_home')]:
        benchmark(os.path.abspath(home), photos, args.repeat)
    return 0


if __name__ == '__main__':
    sys.exit(main())
