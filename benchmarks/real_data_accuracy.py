"""Real-photo accuracy: train on cats_and_dogs_filtered/train, report on validation/ only.

The pipeline sees train/ alone (its own hash split of train/ drives tuning, evaluation and
blessing); validation/ is read once, after the push, through the pushed model's
serving_image_bytes signature, and nothing is tuned on it. Prints numbers, asserts nothing.

    .venv/bin/python benchmarks/real_data_accuracy.py [--data DIR] [--weights H5] [--image-size N]
"""
import argparse
import glob
import os
import sys
import tempfile
import time

from petpark.pipeline import console
from petpark.pipeline.settings import Settings

console.quiet_libraries(numbers_only=True)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from petpark.modules import features  # noqa: E402
from petpark.pipeline.inspection import summary  # noqa: E402
from petpark.pipeline.runners import local as local_runner  # noqa: E402

SHARED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), '..', 'shared')


def score(model_dir: str, validation_dir: str, batch: int = 64) -> dict:
    """Accuracy, precision and recall (dog = positive) of a pushed model on validation/<class>/*."""
    signature = tf.saved_model.load(model_dir).signatures[features.IMAGE_BYTES_SIGNATURE]
    paths, labels = [], []
    for index, label in enumerate(features.LABELS):
        files = sorted(glob.glob(os.path.join(validation_dir, label + 's', '*')))
        paths += files
        labels += [index] * len(files)
    probabilities = []
    for start in range(0, len(paths), batch):
        data = [open(p, 'rb').read() for p in paths[start:start + batch]]
        probabilities.append(signature(image_bytes=tf.constant(data))['scores'].numpy()[:, 1])
    predicted = np.concatenate(probabilities) >= 0.5
    truth = np.array(labels) == 1
    true_positives = float(np.sum(predicted & truth))
    return {'images': len(paths), 'accuracy': float(np.mean(predicted == truth)),
            'precision': true_positives / max(1, predicted.sum()), 'recall': true_positives / max(1, truth.sum())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--data', default=os.path.join(SHARED, 'data', 'cats_and_dogs_filtered'))
    parser.add_argument('--weights', default=os.path.join(SHARED, 'models', 'mobilenet_2_5_224_tf_no_top.h5'))
    parser.add_argument('--image-size', type=int, default=224)
    parser.add_argument('--home', help='pipeline home (default: a new temporary folder)')
    args = parser.parse_args()
    if not os.path.isdir(os.path.join(args.data, 'validation')):
        print(f'skipped: {args.data}/validation not found')
        return 0
    home = args.home or tempfile.mkdtemp(prefix='petpark-real-')
    settings = Settings.from_env({
        'home': home, 'data_root': os.path.abspath(args.data), 'input_pattern': 'train/*/*',
        'backbone': 'mobilenet', 'backbone_weights': os.path.abspath(args.weights),
        'image_size': args.image_size, 'tune': False, 'train_steps': 600, 'train_epochs': 10,
        'min_accuracy': 0.8}, environ={})
    start = time.monotonic()
    with console.Console(verbose=False, log_path=os.path.join(home, 'real.log')):
        local_runner.run(settings, local_runner.local_pipeline(settings))
    run = summary.latest_run(settings.metadata_path, settings.pipeline_name)
    print('\n'.join(summary.describe(run)))
    print(f'pipeline wall time: {time.monotonic() - start:.0f} s')
    pushed = run.output('Pusher', 'pushed_model')
    if pushed is None or pushed.custom_properties['pushed'].int_value != 1:
        print('model not pushed: no validation score')
        return 1
    result = score(pushed.custom_properties['pushed_destination'].string_value,
                   os.path.join(args.data, 'validation'))
    print(f"validation/ ({result['images']} images, never seen by the pipeline): accuracy "
          f"{result['accuracy']:.3f}, precision {result['precision']:.3f}, recall {result['recall']:.3f}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
