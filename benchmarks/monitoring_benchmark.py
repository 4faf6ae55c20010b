"""Monitoring benchmark: prints numbers, asserts nothing.

Where ../shared is present: the real photos, `cats_and_dogs_filtered/train` as what the model is
trained on (its train split is the reference, its eval split calibrates the thresholds) and
`validation/` as the traffic; elsewhere synthetic frames (a training set and a separate traffic set).

1. Trains the model with the pipeline (MobileNetV2 0.5 at 128 px on real photos; the demo's CNN on
   synthetic frames) in a benchmark home, kept for later runs, with its MonitoringBaseline.
2. Scores the traffic photos and their variants: darkened to x0.8, grayscale (infrared), and
   resized (a client resizing frames: to 224x224, and to 640x480, which most photos' resolution and
   aspect buckets already are), computing features as the monitor does.
3. False alarms: windows of 50 to 5,000 in-distribution frames (drawn from the traffic), each
   checked as `petpark monitor` checks a window (schema, skew, drift against another window,
   prediction drift): the share that breach, per size.
4. Detection: 50-frame windows with every frame darkened, with 20% grayscale frames, and resized.
5. The label-free accuracy estimate next to the true accuracy of labelled windows.

    .venv/bin/python benchmarks/monitoring_benchmark.py [--home DIR] [--windows 200] [--synthetic]
"""
import argparse
import glob
import io
import os
import sys
import time

import numpy as np
import pandas as pd

from petpark.pipeline import console

console.quiet_libraries(numbers_only=True)

from petpark.modules import features  # noqa: E402  (after quieting TF)
from petpark.pipeline import synthetic_data  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(REPO), 'shared')
SIZES = (50, 100, 200, 500, 1000, 2000, 5000)


def train(home: str, real: bool):
    """The pipeline run of the benchmark home (reused when it pushed already); returns the version."""
    from petpark.monitoring import baseline as baselines
    from petpark.pipeline.inspection.store import Lineage
    from petpark.pipeline.runners import local as local_runner
    from petpark.pipeline.settings import Settings
    if real:
        overrides = {'home': home, 'data_root': os.path.join(SHARED, 'data', 'cats_and_dogs_filtered'),
                     'input_pattern': 'train/*/*', 'backbone': 'mobilenet_v2_0.5', 'image_size': 128,
                     'backbone_weights': os.path.join(SHARED, 'models', 'mobilenet_v2_weights_tf_dim_ordering_tf_'
                                                                        'kernels_0.5_224_no_top.h5'),
                     'tune': 'false', 'train_steps': 300, 'train_epochs': 3, 'batch_size': 32,
                     'validate_serving': 'false', 'export_onnx': 'false', 'min_accuracy': 0.5}
    else:
        overrides = {'home': home, 'validate_serving': 'false', 'export_onnx': 'false', 'tune': 'false'}
        if not synthetic_data.exists(os.path.join(home, 'data', 'synthetic')):
            synthetic_data.generate(os.path.join(home, 'data', 'synthetic'), 600, seed=0)
    settings = Settings.from_env(overrides, environ={})
    started = time.monotonic()  # a later run takes what did not change from the TFX cache
    with console.Console(verbose=False, log_path=os.path.join(home, 'logs', 'benchmark.log')):
        local_runner.run(settings, local_runner.local_pipeline(settings))
    version = baselines.newest_version(Lineage(settings.metadata_path, settings.pipeline_name))
    print(f'pipeline run (cached where nothing changed) in {time.monotonic() - started:.0f} s; version {version}')
    return settings, version


def traffic(real: bool, work: str):
    """[(encoded image, label)] of the traffic photos."""
    if real:
        paths = sorted(glob.glob(os.path.join(SHARED, 'data', 'cats_and_dogs_filtered', 'validation', '*', '*')))
    else:
        folder = os.path.join(work, 'traffic')
        if not synthetic_data.exists(folder):
            synthetic_data.generate(folder, 1000, seed=77)
        paths = sorted(glob.glob(os.path.join(folder, '*', '*.jpg')))
    photos = []
    for path in paths:
        label = 'dog' if os.path.basename(os.path.dirname(path)).startswith('dog') else 'cat'
        with open(path, 'rb') as f:
            photos.append((f.read(), label))
    return photos


def variant(data: bytes, kind: str) -> bytes:
    from PIL import Image
    image = Image.open(io.BytesIO(data)).convert('RGB')
    if kind == 'darkened':
        image = Image.fromarray((np.asarray(image, dtype=np.float32) * 0.8).astype(np.uint8))
    elif kind == 'grayscale':
        image = image.convert('L').convert('RGB')
    elif kind == 'resized':
        image = image.resize((224, 224))
    elif kind == 'resized_same_bucket':
        image = image.resize((640, 480))
    buffer = io.BytesIO()
    image.save(buffer, format='JPEG', quality=92)
    return buffer.getvalue()


def prepared(settings, version: str, photos):
    """{variant: (DataFrame of frame features, scores, correct)} for the traffic and its variants."""
    import pandas as pd
    import tensorflow as tf
    from petpark.monitoring import frames
    from petpark.monitoring.logs import Frame
    model = tf.saved_model.load(os.path.join(settings.serving_model_dir, version)).signatures[
        features.IMAGE_BYTES_SIGNATURE]
    found = {}
    for kind in ('original', 'darkened', 'grayscale', 'resized', 'resized_same_bucket'):
        rows, scores, correct = [], [], []
        images = [data if kind == 'original' else variant(data, kind) for data, _ in photos]
        for start in range(0, len(images), 64):
            batch = images[start:start + 64]
            scores += model(image_bytes=tf.constant(batch))['scores'].numpy()[:, features.POSITIVE_CLASS_ID].tolist()
        for index, (data, (_, label)) in enumerate(zip(images, photos)):
            frame = Frame(f'{kind}{index}', int(time.time()), settings.model_name, int(version), '', '', data)
            values, problem = frames.frame_features(frame)
            if problem:
                raise RuntimeError(f'{kind} photo {index}: {problem}')
            rows.append(dict(values, **{features.IMAGE_KEY: data, features.IMAGE_ID_KEY: frame.record_id}))
            correct.append((scores[index] >= 0.5) == (label == 'dog'))
        found[kind] = (pd.DataFrame(rows), np.asarray(scores, dtype=np.float32), np.asarray(correct))
    return found


def window(data, indices):
    table, scores, correct = data
    return table.iloc[indices].reset_index(drop=True), scores[indices], correct[indices]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--home', default=os.path.join(REPO, 'petpark_home_monitoring_benchmark'))
    parser.add_argument('--windows', type=int, default=200, help='windows per size and per drift')
    parser.add_argument('--synthetic', action='store_true', help='synthetic frames even where ../shared is present')
    args = parser.parse_args()
    real = not args.synthetic and os.path.isdir(os.path.join(SHARED, 'data', 'cats_and_dogs_filtered'))
    settings, version = train(os.path.abspath(args.home), real)
    from petpark.components.monitoring_baseline import drift
    from petpark.monitoring import baseline as baselines, checks
    from petpark.pipeline.inspection.store import Lineage
    _, artifact = baselines.pushed_and_baseline(Lineage(settings.metadata_path, settings.pipeline_name), version)
    baseline = baselines.load(artifact.uri)
    photos = traffic(real, os.path.abspath(args.home))
    print(f"{'Real photos: train/ as reference, validation/ as traffic' if real else 'Synthetic frames'}; "
          f"version {version}; baseline calibrated on {baseline.record['examples']} {baseline.record['split']} "
          f"examples, false-alarm rate {baseline.record['false_alarm_rate']}; traffic {len(photos)} photos")
    started = time.monotonic()
    data = prepared(settings, version, photos)
    print(f'features and scores of {5 * len(photos)} frames: {time.monotonic() - started:.0f} s')
    rng = np.random.RandomState(0)
    total = len(photos)

    def verdict(rows, scores):
        return checks.check_window(rows, scores, baseline).verdict

    def statistics_of(rows):
        served = rows[[c for c in checks.SERVED if c in rows]]
        return drift.statistics(served, baseline.schema)

    print('\nFalse alarms on in-distribution windows (drawn from the traffic; drift against another such window):')
    print(f"  {'frames':>7} {'windows':>8} {'breached':>9} {'share':>7}  checks that breached")
    for size in SIZES:
        breached, which = 0, {}
        for _ in range(args.windows):
            rows, scores, _ = window(data['original'], rng.randint(0, total, size))
            previous = statistics_of(window(data['original'], rng.randint(0, total, size))[0])
            checked = checks.check_window(rows, scores, baseline, previous)
            if checked.verdict == checks.BREACH:
                breached += 1
                for reason in checked.reasons:
                    which[reason['check']] = which.get(reason['check'], 0) + 1
        print(f'  {size:>7} {args.windows:>8} {breached:>9} {breached / args.windows:>7.1%}  '
              + (', '.join(f'{k} {v}' for k, v in sorted(which.items())) or '-'))

    print('\nDetection in 50-frame windows:')
    for name, mix in (('every frame darkened x0.8', {'darkened': 1.0}), ('20% infrared (grayscale) frames',
                                                                         {'grayscale': 0.2}),
                      ('frames resized to 224x224', {'resized': 1.0}),
                      ('frames resized to 640x480', {'resized_same_bucket': 1.0})):
        detected = 0
        for _ in range(args.windows):
            indices = rng.randint(0, total, 50)
            changed = rng.rand(50) < list(mix.values())[0]
            kind = list(mix)[0]
            parts = [window(data['original'], indices[~changed]), window(data[kind], indices[changed])]
            rows = pd.concat([parts[0][0], parts[1][0]], ignore_index=True)
            scores = np.concatenate([parts[0][1], parts[1][1]])
            detected += verdict(rows, scores) == checks.BREACH
        print(f'  {name:<34} {detected}/{args.windows} windows breached ({detected / args.windows:.1%})')

    print('\nAccuracy without labels (the estimate) against the true accuracy, 200-frame windows, mean of 20:')
    print(f"  {'window':<30} {'estimate':>9} {'true':>7} {'error':>7}")
    for name, kind, share in (('in distribution', 'original', 0.0), ('darkened x0.8', 'darkened', 1.0),
                              ('50% grayscale', 'grayscale', 0.5), ('resized', 'resized', 1.0)):
        estimates, truths = [], []
        for _ in range(20):
            indices = rng.randint(0, total, 200)
            changed = rng.rand(200) < share
            rows_a, scores_a, correct_a = window(data['original'], indices[~changed])
            rows_b, scores_b, correct_b = window(data[kind], indices[changed])
            rows = pd.concat([rows_a, rows_b], ignore_index=True)
            estimate = checks.check_window(rows, np.concatenate([scores_a, scores_b]), baseline).numbers['estimate']
            estimates.append(estimate.get('accuracy', np.nan))
            truths.append(np.concatenate([correct_a, correct_b]).mean())
        estimate, truth = float(np.nanmean(estimates)), float(np.mean(truths))
        print(f'  {name:<30} {estimate:>9.3f} {truth:>7.3f} {estimate - truth:>+7.3f}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
