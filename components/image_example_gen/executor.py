"""ImageExampleGen executor: image folders (+ optional metadata CSV) -> tf.Examples.

Every matched file ends up either as a tf.Example or as a line in the ingestion
report with the reason it was excluded; none is dropped silently. Images in modes
the model cannot read directly (grayscale, CMYK, palette, 16-bit, alpha, other
formats) are converted to RGB JPEG and counted as converted.
"""
import collections
import csv
import datetime
import io
import json
import os
import re
from typing import Any, Dict, Iterable, List, Optional, Tuple

import apache_beam as beam
import numpy as np
import tensorflow as tf
from absl import logging
from PIL import Image
from tfx.components.example_gen import base_example_gen_executor
from tfx.dsl.io import fileio
from tfx.types import artifact_utils

from modules import features

METADATA_FILE = 'metadata.csv'
REPORT_FILE = 'report.json'
MAX_BAD_FRACTION_KEY = 'max_bad_fraction'
INGESTION_REPORT_KEY = 'ingestion_report'
_REPORT_DIR_KEY = '_ingestion_report_dir'
_PARTS_DIR = 'parts'
_KAGGLE_NAME = re.compile(r'^([A-Za-z]+)\.\d+\.[A-Za-z0-9]+$')
_LFS_POINTER = b'version https://git-lfs'
_WORST_FILES_SHOWN = 10

ACCEPTED, CONVERTED, REJECTED = 'accepted', 'converted', 'rejected'


class FileRejected(Exception):
    """A file that cannot become an example; `reason` is a short stable code."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f'{reason}: {detail}')
        self.reason = reason
        self.detail = detail


def image_root(input_base: str, split_pattern: str) -> str:
    """The folder a split pattern's images live under: its part before the first glob."""
    parts = split_pattern.split('/')
    fixed = []
    for part in parts[:-1]:
        if any(c in part for c in '*?['):
            break
        fixed.append(part)
    return os.path.join(input_base, *fixed)


def normalize_label(name: str) -> str:
    """'Cats' -> 'cat'; names that are not a known class in plural stay as given."""
    name = name.strip().lower()
    if name.endswith('s') and name[:-1] in features.LABELS:
        return name[:-1]
    return name


def label_from_path(relative_path: str) -> Optional[str]:
    """Label from a Kaggle-style name (`cat.123.jpg`), else the class folder (`<class>/...`)."""
    parts = relative_path.split('/')
    match = _KAGGLE_NAME.match(parts[-1])
    if match:
        return normalize_label(match.group(1))
    if len(parts) > 1:
        return normalize_label(parts[0])
    return None


def read_metadata(root: str) -> Dict[str, Dict[str, str]]:
    """Rows of `<root>/metadata.csv` keyed by the `image` column (relative path)."""
    path = os.path.join(root, METADATA_FILE)
    if not fileio.exists(path):
        return {}
    with fileio.open(path, 'r') as f:
        reader = csv.DictReader(io.StringIO(f.read()))
        if not reader.fieldnames or 'image' not in reader.fieldnames:
            raise ValueError(f'{path}: metadata CSV needs an "image" column, found {reader.fieldnames}')
        return {row['image'].strip(): row for row in reader}


def _to_rgb(image: Image.Image) -> Tuple[Image.Image, Optional[str]]:
    """Returns an RGB image and the conversion reason (None when already RGB)."""
    mode = image.mode
    if mode == 'RGB':
        return image, None
    if mode in ('I;16', 'I;16B', 'I;16L', 'I;16N', 'I'):
        pixels = np.asarray(image, dtype=np.float64)
        scale = 257.0 if pixels.max() > 255 else 1.0
        gray = Image.fromarray(np.clip(pixels / scale, 0, 255).astype(np.uint8))
        return gray.convert('RGB'), 'sixteen_bit'
    reason = {'L': 'grayscale', 'LA': 'grayscale', '1': 'grayscale', 'CMYK': 'cmyk',
              'P': 'palette', 'PA': 'palette', 'RGBA': 'alpha'}.get(mode, f'mode_{mode}')
    if mode in ('P', 'PA') and 'transparency' in image.info:
        image = image.convert('RGBA')
    return image.convert('RGB'), reason


def _is_grayscale(original: Image.Image, rgb: np.ndarray) -> bool:
    if original.mode in ('L', 'LA', '1', 'I', 'I;16', 'I;16B', 'I;16L', 'I;16N'):
        return True
    spread = rgb.max(axis=2).astype(np.int16) - rgb.min(axis=2).astype(np.int16)
    return float(np.percentile(spread, 99)) <= 8


def _lighting(captured_at: str, brightness: float) -> str:
    try:
        hour = datetime.datetime.fromisoformat(captured_at).hour
        return 'night' if hour in features.NIGHT_HOURS else 'day'
    except ValueError:
        return 'night' if brightness < features.NIGHT_BRIGHTNESS else 'day'


def decode_image_file(data: bytes) -> Tuple[bytes, Dict[str, Any], Optional[str]]:
    """Validates encoded image bytes.

    Returns (bytes the model will read, image-derived features, conversion reason).
    Raises FileRejected for files that cannot be used.
    """
    if not data:
        raise FileRejected('empty_file', 'zero bytes')
    if data.startswith(_LFS_POINTER):
        raise FileRejected('lfs_pointer', 'Git LFS pointer text, not the image it points to')
    try:
        image = Image.open(io.BytesIO(data))
        image_format = image.format
        image.load()
    except OSError as e:
        reason = 'truncated' if 'truncated' in str(e).lower() else 'undecodable'
        raise FileRejected(reason, str(e)) from None
    except (ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise FileRejected('undecodable', str(e)) from None
    rgb_image, reason = _to_rgb(image)
    if reason is None and image_format not in ('JPEG', 'PNG'):
        reason = f'format_{image_format.lower()}'
    pixels = np.asarray(rgb_image)
    if reason is not None:
        buffer = io.BytesIO()
        rgb_image.save(buffer, format='JPEG', quality=95)
        data = buffer.getvalue()
    derived = {
        features.WIDTH_KEY: rgb_image.width,
        features.HEIGHT_KEY: rgb_image.height,
        features.BRIGHTNESS_KEY: float((pixels @ np.array([0.299, 0.587, 0.114])).mean() / 255.0),
        features.GRAYSCALE_KEY: int(_is_grayscale(image, pixels)),
    }
    return data, derived, reason


def make_example(image_id: str, label: str, data: bytes, derived: Dict[str, Any],
                 metadata: Dict[str, str]) -> tf.train.Example:
    """Builds the tf.Example for one accepted image."""
    def bytes_feature(value: str | bytes) -> tf.train.Feature:
        value = value.encode('utf-8') if isinstance(value, str) else value
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    def int_feature(value: int) -> tf.train.Feature:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))

    captured_at = (metadata.get(features.CAPTURED_AT_KEY) or '').strip()
    feature = {
        features.IMAGE_KEY: bytes_feature(data),
        features.LABEL_KEY: bytes_feature(label),
        features.IMAGE_ID_KEY: bytes_feature(image_id),
        features.WIDTH_KEY: int_feature(derived[features.WIDTH_KEY]),
        features.HEIGHT_KEY: int_feature(derived[features.HEIGHT_KEY]),
        features.GRAYSCALE_KEY: int_feature(derived[features.GRAYSCALE_KEY]),
        features.BRIGHTNESS_KEY: tf.train.Feature(
            float_list=tf.train.FloatList(value=[derived[features.BRIGHTNESS_KEY]])),
        features.LIGHTING_KEY: bytes_feature(_lighting(captured_at, derived[features.BRIGHTNESS_KEY])),
    }
    camera = (metadata.get(features.CAMERA_KEY) or '').strip()
    if camera:
        feature[features.CAMERA_KEY] = bytes_feature(camera)
    if captured_at:
        feature[features.CAPTURED_AT_KEY] = bytes_feature(captured_at)
    return tf.train.Example(features=tf.train.Features(feature=feature))


class _FileToExample(beam.DoFn):
    """Reads one file; emits a tf.Example and, on the `status` output, what happened."""

    STATUS = 'status'

    def __init__(self, root: str, metadata: Dict[str, Dict[str, str]]):
        self._root = root
        self._metadata = metadata

    def process(self, path: str) -> Iterable[Any]:
        image_id = os.path.relpath(path, self._root).replace(os.sep, '/')
        try:
            example, conversion = self._convert(path, image_id)
        except FileRejected as e:
            yield beam.pvalue.TaggedOutput(self.STATUS, (REJECTED, e.reason, image_id, e.detail))
            return
        status = (CONVERTED, conversion) if conversion else (ACCEPTED, '')
        yield beam.pvalue.TaggedOutput(self.STATUS, status + (image_id, ''))
        yield example

    def _convert(self, path: str, image_id: str) -> Tuple[tf.train.Example, Optional[str]]:
        metadata = self._metadata.get(image_id, {})
        path_label = label_from_path(image_id)
        csv_label = normalize_label(metadata.get(features.LABEL_KEY) or '') or None
        if path_label and csv_label and path_label != csv_label:
            raise FileRejected('label_mismatch', f'folder/name says {path_label!r}, {METADATA_FILE} says {csv_label!r}')
        label = path_label or csv_label
        if not label:
            raise FileRejected('no_label', 'no class folder, Kaggle-style name or metadata label')
        try:
            with fileio.open(path, 'rb') as f:
                raw = f.read()
        except (OSError, tf.errors.OpError) as e:
            raise FileRejected('unreadable', str(e)) from None
        data, derived, conversion = decode_image_file(raw)
        return make_example(image_id, label, data, derived, metadata), conversion


def list_image_files(input_base: str, split_pattern: str) -> Tuple[str, List[str]]:
    """Image root and the sorted files the pattern matches (metadata CSV excluded)."""
    root = image_root(input_base, split_pattern)
    metadata_path = os.path.normpath(os.path.join(root, METADATA_FILE))
    files = sorted(p for p in fileio.glob(os.path.join(input_base, split_pattern))
                   if not fileio.isdir(p) and os.path.normpath(p) != metadata_path)
    if not files:
        raise ValueError(f'No files match input pattern {split_pattern!r} under {input_base!r}')
    return root, files


@beam.ptransform_fn
@beam.typehints.with_input_types(beam.Pipeline)
@beam.typehints.with_output_types(tf.train.Example)
def _ImagesToExample(pipeline: beam.Pipeline, exec_properties: Dict[str, Any],
                     split_pattern: str) -> beam.pvalue.PCollection:
    """Reads the images of one input split; writes per-file status lines to the report."""
    root, files = list_image_files(exec_properties['input_base'], split_pattern)
    logging.info('ImageExampleGen: %d files under %s', len(files), root)
    results = (pipeline
               | 'ListFiles' >> beam.Create(files)
               | 'Spread' >> beam.Reshuffle()
               | 'ReadImages' >> beam.ParDo(_FileToExample(root, read_metadata(root))).with_outputs(
                   _FileToExample.STATUS, main='examples'))
    parts = os.path.join(exec_properties[_REPORT_DIR_KEY], _PARTS_DIR, 'status')
    _ = (results[_FileToExample.STATUS]
         | 'StatusToJson' >> beam.Map(lambda s: json.dumps(dict(zip(('status', 'reason', 'image', 'detail'), s))))
         | 'WriteStatus' >> beam.io.WriteToText(parts, file_name_suffix='.jsonl'))
    return results.examples


def summarize(statuses: Iterable[Dict[str, str]]) -> Dict[str, Any]:
    """Aggregates per-file status lines into the ingestion report."""
    counts = collections.Counter()
    converted = collections.Counter()
    rejected = collections.Counter()
    rejected_files = []
    for status in statuses:
        counts[status['status']] += 1
        if status['status'] == CONVERTED:
            converted[status['reason']] += 1
        elif status['status'] == REJECTED:
            rejected[status['reason']] += 1
            rejected_files.append({k: status[k] for k in ('image', 'reason', 'detail')})
    total = sum(counts.values())
    rejected_files.sort(key=lambda f: (-rejected[f['reason']], f['image']))
    return {
        'total_files': total,
        'examples': counts[ACCEPTED] + counts[CONVERTED],
        'converted': dict(converted),
        'rejected': dict(rejected),
        'rejected_fraction': counts[REJECTED] / total if total else 0.0,
        'rejected_files': rejected_files,
    }


def check_report(report: Dict[str, Any], max_bad_fraction: float) -> None:
    """Raises when too many files were rejected, naming the worst of them."""
    if report['examples'] and report['rejected_fraction'] <= max_bad_fraction:
        return
    worst = '; '.join(f"{f['image']} ({f['reason']})" for f in report['rejected_files'][:_WORST_FILES_SHOWN])
    raise RuntimeError(
        f"ImageExampleGen: {sum(report['rejected'].values())} of {report['total_files']} input files "
        f"({report['rejected_fraction']:.1%}) could not be used, above max_bad_fraction="
        f"{max_bad_fraction:.2%}. Rejected by reason: {report['rejected']}. Worst files: {worst}")


class Executor(base_example_gen_executor.BaseExampleGenExecutor):
    """Turns image folders into tf.Examples and writes an ingestion report."""

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
        return _ImagesToExample

    def Do(self, input_dict: Dict[str, List[Any]], output_dict: Dict[str, List[Any]],
           exec_properties: Dict[str, Any]) -> None:
        report_dir = artifact_utils.get_single_uri(output_dict[INGESTION_REPORT_KEY])
        exec_properties = dict(exec_properties, **{_REPORT_DIR_KEY: report_dir})
        super().Do(input_dict, output_dict, exec_properties)
        parts_dir = os.path.join(report_dir, _PARTS_DIR)
        statuses = []
        for part in sorted(fileio.glob(os.path.join(parts_dir, '*.jsonl'))):
            with fileio.open(part, 'r') as f:
                statuses.extend(json.loads(line) for line in f.read().splitlines() if line)
        report = summarize(statuses)
        with fileio.open(os.path.join(report_dir, REPORT_FILE), 'w') as f:
            f.write(json.dumps(report, indent=1))
        fileio.rmtree(parts_dir)
        logging.info('ImageExampleGen: %d examples from %d files; converted %s; rejected %s',
                     report['examples'], report['total_files'], report['converted'], report['rejected'])
        check_report(report, float(exec_properties.get(MAX_BAD_FRACTION_KEY, 0.0)))
