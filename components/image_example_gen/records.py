"""One image file -> one tf.Example: its label, its metadata row, its pixels' features.

Plain functions (no Beam): the executor maps `file_to_example` over the listed files.
"""
import csv
import dataclasses
import datetime
import io
import os
import posixpath
import stat
from typing import AbstractSet, Any, Dict, FrozenSet, List, Optional, Tuple

import tensorflow as tf
from tfx.dsl.io import fileio

from petpark.components.common.uris import is_local
from petpark.components.image_example_gen import duplicates, images
from petpark.components.image_example_gen.labels import LabelRule
from petpark.components.image_example_gen.rejections import FileRejected
from petpark.modules import features

METADATA_FILE = 'metadata.csv'
_LONGEST_SHOWN = 200


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


def shown(text: str) -> str:
    """`text` as report text: at most _LONGEST_SHOWN characters, saying how long it was when cut."""
    return text if len(text) <= _LONGEST_SHOWN else f'{text[:_LONGEST_SHOWN]}... ({len(text)} characters)'


def rows_without_file(metadata: Dict[str, Dict[str, str]], listed: AbstractSet[str]) -> List[Tuple[str, str, str]]:
    """(image value as shown, reason, detail) of each metadata row whose `image` is none of the listed
    ids (paths below the image root). Decided from the text alone: no path is opened or stat-ed."""
    found = []
    for image in sorted(set(metadata) - set(listed)):
        normal = posixpath.normpath(image.replace('\\', '/'))
        if not image:
            reason, detail = 'empty_image', 'the row names no image'
        elif normal.startswith('/') or normal == '..' or normal.startswith('../'):
            reason, detail = 'outside_image_root', 'a path outside the image root; never opened'
        else:
            reason, detail = 'no_matching_file', 'no file the input pattern matches has this path'
        found.append((shown(image), reason, detail))
    return found


@dataclasses.dataclass(frozen=True)
class LightingRule:
    """Day or night: from the capture hour when known, else from mean brightness."""
    night_hours: FrozenSet[int]
    night_brightness: float

    def __post_init__(self):
        object.__setattr__(self, 'night_hours', frozenset(self.night_hours))
        if not self.night_hours <= set(range(24)):
            raise ValueError(f'night_hours must be hours 0-23, got {sorted(self.night_hours)}')
        if not 0.0 <= self.night_brightness <= 1.0:
            raise ValueError(f'night_brightness must be between 0 and 1, got {self.night_brightness}')

    def of(self, captured_at: str, brightness: float) -> str:
        try:
            return 'night' if datetime.datetime.fromisoformat(captured_at).hour in self.night_hours else 'day'
        except ValueError:
            return 'night' if brightness < self.night_brightness else 'day'


def _bytes_feature(value: str | bytes) -> tf.train.Feature:
    value = value.encode('utf-8') if isinstance(value, str) else value
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int_feature(value: int) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


def make_example(image_id: str, label: str, data: bytes, derived: Dict[str, Any],
                 metadata: Dict[str, str], lighting: str) -> tf.train.Example:
    """Builds the tf.Example for one accepted image."""
    feature = {
        features.IMAGE_KEY: _bytes_feature(data),
        features.LABEL_KEY: _bytes_feature(label),
        features.IMAGE_ID_KEY: _bytes_feature(image_id),
        features.WIDTH_KEY: _int_feature(derived[features.WIDTH_KEY]),
        features.HEIGHT_KEY: _int_feature(derived[features.HEIGHT_KEY]),
        features.GRAYSCALE_KEY: _int_feature(derived[features.GRAYSCALE_KEY]),
        features.BRIGHTNESS_KEY: tf.train.Feature(
            float_list=tf.train.FloatList(value=[derived[features.BRIGHTNESS_KEY]])),
        features.LIGHTING_KEY: _bytes_feature(lighting),
        features.DUPLICATE_GROUP_KEY: _bytes_feature(image_id),  # until duplicates are grouped
    }
    buckets = features.image_buckets(derived[features.WIDTH_KEY], derived[features.HEIGHT_KEY],
                                     derived[features.BRIGHTNESS_KEY])
    feature.update((key, _bytes_feature(name)) for key, name in buckets.items())
    for key in (features.CAMERA_KEY, features.CAPTURED_AT_KEY):
        value = (metadata.get(key) or '').strip()
        if value:
            feature[key] = _bytes_feature(value)
    return tf.train.Example(features=tf.train.Features(feature=feature))


def read_file(path: str, max_bytes: int) -> bytes:
    """The file's bytes. A local file is opened without blocking and read only when it is a
    regular file of at most `max_bytes` (a FIFO swapped in after listing is never read)."""
    if not is_local(path):
        with fileio.open(path, 'rb') as f:
            return f.read(max_bytes + 1)
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(descriptor, 'rb') as f:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise FileRejected('not_a_regular_file', 'not a regular file when opened; not read')
        return f.read(max_bytes + 1)


def image_id_of(example: tf.train.Example) -> str:
    return example.features.feature[features.IMAGE_ID_KEY].bytes_list.value[0].decode('utf-8')


def with_duplicate_group(example: tf.train.Example, group_of: Dict[str, str]) -> tf.train.Example:
    """A copy of `example` whose duplicate group is that of `group_of` (itself when it has no duplicate)."""
    group = group_of.get(image_id_of(example))
    if group is None:
        return example
    grouped = tf.train.Example()
    grouped.CopyFrom(example)
    grouped.features.feature[features.DUPLICATE_GROUP_KEY].bytes_list.value[:] = [group.encode('utf-8')]
    return grouped


def file_to_example(path: str, relative_id: str, metadata: Dict[str, str], labels: LabelRule, lighting: LightingRule,
                    max_file_bytes: int, id_prefix: str = '') -> Tuple[tf.train.Example, Optional[str],
                                                                      duplicates.Fingerprint]:
    """(example, conversion reason or None, duplicate fingerprint) for the file at `path`; raises FileRejected.

    relative_id: the path below the image root, which the label is read from; the example's image
    id is id_prefix + relative_id."""
    label = labels.resolve(relative_id, metadata.get(features.LABEL_KEY), METADATA_FILE)
    image_id = id_prefix + relative_id
    try:
        raw = read_file(path, max_file_bytes)
    except (OSError, tf.errors.OpError) as e:
        raise FileRejected('unreadable', str(e)) from None
    if len(raw) > max_file_bytes:
        raise FileRejected('too_large', f'more than max_file_bytes={max_file_bytes} bytes')
    data, derived, conversion = images.decode_image_file(raw)
    captured_at = (metadata.get(features.CAPTURED_AT_KEY) or '').strip()
    day_or_night = lighting.of(captured_at, derived[features.BRIGHTNESS_KEY])
    fingerprint = duplicates.fingerprint(image_id, label, derived.pop(images.RGB_IMAGE))
    return make_example(image_id, label, data, derived, metadata, day_or_night), conversion, fingerprint
