"""Real-photo benchmark: prints numbers, asserts nothing.

Runs `petpark run --profile real` (train/ and the 128 px set pooled, validation/ held out) in a
fresh home as a separate process, sampling the memory of its whole process tree (Beam workers,
the model server of the serving check) once a second. Then prints, from MLMD: wall time per
component, images/second for ImageExampleGen, StatisticsGen, Transform and the Trainer, each
artifact's size on disk, the peak memory, and the Evaluator's metrics on validation/ overall and
per slice (with the worst slice), plus per-class precision and recall.

    .venv/bin/python benchmarks/real_photo_benchmark.py [--home DIR] [--report-only] [-- petpark run flags]
"""
import argparse
import json
import os
import subprocess
import sys
import threading
import time

import psutil

from petpark.pipeline import console
from petpark.pipeline.settings import Settings

console.quiet_libraries(numbers_only=True)

from petpark.pipeline.inspection import summary  # noqa: E402  (after quieting TF)

PEAK_FILE = 'benchmark_peak.json'
RATE_COMPONENTS = ('ImageExampleGen', 'StatisticsGen', 'Transform')
MIN_SLICE_SIZE = 30  # smaller slices are shown but not named the worst: their accuracy is noise


def tree_memory(process: psutil.Process) -> tuple:
    """(RSS, PSS) bytes of a process and all its descendants. RSS counts the pages they share (the
    TensorFlow libraries each Beam worker maps) once per process; PSS splits them between them."""
    rss = pss = 0
    for member in [process] + process.children(recursive=True):
        try:
            info = member.memory_full_info()
        except psutil.Error:
            continue
        rss, pss = rss + info.rss, pss + info.pss
    return rss, pss


def run(home: str, flags: list) -> None:
    """Runs the real profile into `home`, recording wall time and the process tree's peak memory."""
    command = [os.path.join(os.path.dirname(sys.executable), 'petpark'), 'run', '--profile', 'real', '--home', home,
               *flags]
    print('$ ' + ' '.join(command), flush=True)
    start = time.monotonic()
    child = subprocess.Popen(command)
    watched, samples, done = psutil.Process(child.pid), [], threading.Event()

    def sample():
        while not done.wait(1.0):
            samples.append((time.time(), *tree_memory(watched)))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    code = child.wait()
    done.set()
    sampler.join()
    wall = time.monotonic() - start
    os.makedirs(home, exist_ok=True)
    with open(os.path.join(home, PEAK_FILE), 'w') as f:
        json.dump({'wall_s': wall, 'exit_code': code, 'samples': samples}, f)
    if code:
        raise SystemExit(f'petpark run failed with exit code {code}')


def size_of(uri: str) -> int:
    if os.path.isfile(uri):
        return os.path.getsize(uri)
    return sum(os.path.getsize(os.path.join(folder, name)) for folder, _, names in os.walk(uri) for name in names)


def split_counts(examples) -> dict:
    """{split: examples} from ExampleGen's statistics-free split folders (records counted)."""
    import tensorflow as tf
    counts = {}
    for split in json.loads(examples.properties['split_names'].string_value):
        files = tf.io.gfile.glob(os.path.join(examples.uri, f'Split-{split}', '*'))
        counts[split] = sum(1 for _ in tf.data.TFRecordDataset(files, compression_type='GZIP'))
    return counts


def report(home: str) -> None:
    settings = Settings.from_env({'profile': 'real', 'home': home}, check_data_root=False)
    record = summary.latest_run(settings.metadata_path, settings.pipeline_name)
    with open(os.path.join(home, PEAK_FILE)) as f:
        measured = json.load(f)
    counts = split_counts(record.output('ImageExampleGen', 'examples'))
    total = sum(counts.values())
    print(f"Real-photo run ({', '.join(f'{k} {v}' for k, v in counts.items())}; image size {settings.training.image_size}, "
          f'{settings.training.backbone}, Beam workers {settings.beam.beam_workers})')
    samples = measured['samples']
    print(f"  wall {measured['wall_s'] / 60:.1f} min (target < 60); peak memory of the process tree: "
          f"PSS {max(s[2] for s in samples) / 2 ** 30:.2f} GiB (target < 8), "
          f"RSS summed over processes {max(s[1] for s in samples) / 2 ** 30:.2f} GiB")
    trained = (settings.training.train_steps + settings.training.fine_tune_steps) * settings.training.batch_size
    print(f'  {"component":<28} {"seconds":>8} {"images/s":>9} {"peak PSS":>9}')
    for node, seconds in record.seconds.items():
        start, end = record.started[node], record.started[node] + seconds
        during = [s[2] for s in samples if start <= s[0] <= end]
        peak = f'{max(during) / 2 ** 30:7.2f} G' if during else ''

        rate = ''
        if node in RATE_COMPONENTS:
            rate = f'{(total if node != "Transform" else counts["train"] + counts["eval"]) / seconds:9.1f}'
        elif node == 'Trainer':
            rate = f'{trained / seconds:9.1f}'
        print(f'  {node:<28} {seconds:8.1f} {rate:>9} {peak:>9}  {record.states[node]}')
    print(f'  (Trainer: {trained} images through training steps; evaluation batches not counted)')
    print('  artifact sizes')
    for node, outputs in record.outputs.items():
        for key, artifacts in outputs.items():
            if artifacts:
                print(f'    {node + "." + key:<44} {size_of(artifacts[-1].uri) / 2 ** 20:10.1f} MiB')
    evaluation = record.output('Evaluator', 'evaluation')
    rows = summary.slice_metrics(evaluation.uri)
    print(f'  Evaluator on the {summary.evaluated_split(record)} split (positive class dog, threshold 0.5)')
    print(f"    {'slice':<34}" + ''.join(f'{title:>10}' for _, title in summary.METRIC_COLUMNS))
    for name, values in rows:
        print('    ' + summary.format_row(name, values))
    sized = [(name, v) for name, v in rows if name != 'overall' and v.get('example_count', 0) >= MIN_SLICE_SIZE]
    if sized:
        name, values = min(sized, key=lambda row: row[1]['binary_accuracy'])
        print(f"  worst slice with n >= {MIN_SLICE_SIZE}: {name}, accuracy {values['binary_accuracy']:.3f} "
              f"(n={values['example_count']:.0f})")
    for line in summary.per_class_lines(rows):
        print('  ' + line)
    blessing = record.output('Evaluator', 'blessing')
    print(f"  blessed: {'yes' if summary.facts.prop(blessing, 'blessed') == 1 else 'no'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--home', default=os.path.abspath('petpark_home_real_benchmark'),
                        help='a fresh home (default: ./petpark_home_real_benchmark)')
    parser.add_argument('--report-only', action='store_true', help='report on a finished run in --home')
    parser.add_argument('flags', nargs='*', help='more `petpark run` flags, after --')
    args = parser.parse_args()
    if not args.report_only:
        if os.path.exists(os.path.join(args.home, 'metadata.sqlite')):
            raise SystemExit(f'{args.home} already holds a run: pass a fresh --home (or --report-only)')
        run(args.home, args.flags)
    report(args.home)
    return 0


if __name__ == '__main__':
    sys.exit(main())
