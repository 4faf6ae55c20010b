"""ImageExampleGen executor: every bad-file kind, conversions, labels, metadata, splits."""
import csv
import glob
import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from tfx.proto import example_gen_pb2
from tfx.types import standard_artifacts

from petpark.components.image_example_gen import (component, duplicates, executor, images, labels, listing, records,
                                                report)
from petpark.components.image_example_gen.rejections import FileRejected
from petpark.modules import features
from petpark.pipeline.runners import beam

CATS_AND_DOGS = labels.LabelRule(('cat', 'dog'))
BEAM_ARGS = beam.beam_pipeline_args(1)


def jpeg_bytes(mode='RGB', size=(24, 20), color=(200, 40, 40), **save):
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format='JPEG', **save)
    return buffer.getvalue()


def png_bytes(image):
    buffer = io.BytesIO()
    image.save(buffer, format='PNG')
    return buffer.getvalue()


BAD_FILES = {
    'empty_file': b'',
    'lfs_pointer': b'version https://git-lfs.github.com/spec/v1\noid sha256:4d7a\nsize 12345\n',
    'undecodable': b'\x00\x00\x00\x01Bud1\x00\x00\x10\x00' * 8,  # a .DS_Store's header
    'truncated': jpeg_bytes(size=(64, 64))[:300],
}


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'wb') as f:
        f.write(data)


@pytest.mark.parametrize('reason,data', sorted(BAD_FILES.items()) + [('undecodable', b'just some text\n')])
def test_bad_files_are_rejected_with_their_reason(reason, data):
    with pytest.raises(FileRejected) as error:
        images.decode_image_file(data)
    assert error.value.reason == reason


@pytest.mark.parametrize('reason,data,colour', [
    ('grayscale', jpeg_bytes('L', size=(20, 20), color=90), (90, 90, 90)),
    ('cmyk', jpeg_bytes('CMYK', size=(20, 20), color=(0, 200, 200, 0)), (255, 55, 55)),
    ('palette', png_bytes(Image.new('RGB', (20, 20), (10, 200, 30)).convert('P', palette=Image.ADAPTIVE)), (10, 200, 30)),
    ('sixteen_bit', png_bytes(Image.fromarray(np.full((20, 20), 40000, dtype=np.uint16))), (155, 155, 155)),  # 40000/257
    ('alpha', png_bytes(Image.new('RGBA', (20, 20), (10, 20, 250, 128))), (10, 20, 250)),
    ('format_bmp', (lambda b: (Image.new('RGB', (20, 20), (1, 2, 3)).save(b, format='BMP'), b.getvalue())[1])(io.BytesIO()),
     (1, 2, 3)),
])
def test_unsupported_modes_are_converted_to_rgb_jpeg(reason, data, colour):
    """A new file: JPEG bytes, RGB, the source's size and colours (the original file would fail each)."""
    converted, derived, conversion = images.decode_image_file(data)
    assert conversion == reason
    assert converted.startswith(b'\xff\xd8\xff') and converted != data
    with Image.open(io.BytesIO(converted)) as image:
        assert (image.format, image.mode, image.size) == ('JPEG', 'RGB', (20, 20))
    decoded = tf.io.decode_image(converted, channels=3).numpy()
    assert decoded.shape == (20, 20, 3) and (derived['width'], derived['height']) == (20, 20)
    assert np.abs(decoded.astype(int) - np.array(colour)).max() <= 4, decoded.reshape(-1, 3).mean(axis=0)
    luma = (0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]) / 255
    assert derived[features.BRIGHTNESS_KEY] == pytest.approx(luma, abs=0.02)


def test_sixteen_bit_is_scaled_not_clipped():
    data = png_bytes(Image.fromarray(np.full((8, 8), 32896, dtype=np.uint16)))  # 128 * 257
    converted, derived, _ = images.decode_image_file(data)
    assert abs(derived[features.BRIGHTNESS_KEY] - 128 / 255) < 0.02
    assert derived[features.GRAYSCALE_KEY] == 1


def test_rgb_jpeg_passes_through_untouched():
    data = jpeg_bytes(size=(30, 10))
    out, derived, conversion = images.decode_image_file(data)
    assert out == data and conversion is None
    assert (derived[features.WIDTH_KEY], derived[features.HEIGHT_KEY]) == (30, 10)
    assert derived[features.GRAYSCALE_KEY] == 0


@pytest.mark.parametrize('path,label', [
    ('cats/x.jpg', 'cat'), ('Dogs/a/b.png', 'dog'), ('dog/1.jpg', 'dog'), ('cat.123.jpg', 'cat'),
    ('train/dog.7.jpg', 'dog'), ('rabbit/r.jpg', 'rabbit'), ('lonely.jpg', None)])
def test_label_from_path(path, label):
    assert CATS_AND_DOGS.from_path(path) == label


def test_image_root_stops_at_first_glob():
    assert listing.image_root('/in', 'span-3/*/*') == '/in/span-3'
    assert listing.image_root('/in', '*/*') == '/in'
    assert listing.image_root('/in', '*') == '/in'


def run_executor(tmp_path, input_base, pattern='*/*', max_bad_fraction=0.5, class_names=('cat', 'dog'), **parameters):
    examples = standard_artifacts.Examples()
    examples.uri = str(tmp_path / 'out' / 'examples')
    report_artifact = component.IngestionReport()
    report_artifact.uri = str(tmp_path / 'out' / 'report')
    os.makedirs(report_artifact.uri, exist_ok=True)
    gen = component.ImageExampleGen(input_base=str(input_base), class_names=class_names, input_pattern=pattern,
                                    max_bad_fraction=max_bad_fraction, **parameters)
    exec_properties = dict(gen.exec_properties, output_data_format=example_gen_pb2.FORMAT_TF_EXAMPLE,
                           output_file_format=example_gen_pb2.FORMAT_TFRECORDS_GZIP)
    context = executor.Executor.Context(beam_pipeline_args=BEAM_ARGS, tmp_dir=str(tmp_path / 'tmp'))
    executor.Executor(context).Do({}, {'examples': [examples], 'ingestion_report': [report_artifact]}, exec_properties)
    with open(os.path.join(report_artifact.uri, report.REPORT_FILE)) as f:
        return examples.uri, json.load(f)


def read_examples(examples_uri, splits=('train', 'eval')):
    result = {}
    for split in splits:
        files = glob.glob(os.path.join(examples_uri, f'Split-{split}', '*.gz'))
        for record in tf.data.TFRecordDataset(files, compression_type='GZIP'):
            example = tf.train.Example.FromString(record.numpy())
            image_id = example.features.feature[features.IMAGE_ID_KEY].bytes_list.value[0].decode()
            result[image_id] = (split, example)
    return result


@pytest.fixture
def mixed_folder(tmp_path):
    root = tmp_path / 'data'
    for i in range(12):
        write(str(root / 'cats' / f'c{i}.jpg'), jpeg_bytes(color=(i * 10, 50, 50)))
        write(str(root / 'dogs' / f'd{i}.jpg'), jpeg_bytes(color=(50, i * 10, 50)))
    write(str(root / 'cats' / 'gray.jpg'), jpeg_bytes('L', color=30))
    for reason, data in BAD_FILES.items():
        write(str(root / 'dogs' / f'bad_{reason}.jpg'), data)
    write(str(root / 'cats' / '.DS_Store'), BAD_FILES['undecodable'])
    write(str(root / 'cats' / 'mislabelled.jpg'), jpeg_bytes())
    with open(root / 'metadata.csv', 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(['image', 'label', 'camera_id', 'captured_at'])
        writer.writerow(['cats/c0.jpg', 'cat', 'cam-02', '2026-06-01T23:15:00'])
        writer.writerow(['dogs/d0.jpg', 'dog', 'cam-03', '2026-06-01T12:00:00'])
        writer.writerow(['cats/mislabelled.jpg', 'dog', 'cam-01', '2026-06-01T12:00:00'])
    return root


def test_executor_writes_examples_and_reports_every_excluded_file(tmp_path, mixed_folder):
    examples_uri, report = run_executor(tmp_path, mixed_folder)
    examples = read_examples(examples_uri)
    assert report['total_files'] == 31
    assert report['examples'] == len(examples) == 25
    assert report['converted'] == {'grayscale': 1}
    assert report['rejected'] == {'empty_file': 1, 'lfs_pointer': 1, 'undecodable': 2, 'truncated': 1,
                                  'label_mismatch': 1}
    assert {f['image'] for f in report['rejected_files']} >= {'cats/.DS_Store', 'cats/mislabelled.jpg',
                                                              'dogs/bad_lfs_pointer.jpg'}
    assert {split for split, _ in examples.values()} == {'train', 'eval'}
    feature = examples['cats/c0.jpg'][1].features.feature
    assert feature[features.LABEL_KEY].bytes_list.value == [b'cat']
    assert feature[features.CAMERA_KEY].bytes_list.value == [b'cam-02']
    assert feature[features.LIGHTING_KEY].bytes_list.value == [b'night']  # 23:15
    assert examples['dogs/d0.jpg'][1].features.feature[features.LIGHTING_KEY].bytes_list.value == [b'day']
    assert features.CAMERA_KEY not in examples['dogs/d5.jpg'][1].features.feature
    assert not glob.glob(os.path.join(str(tmp_path / 'out' / 'report'), executor._PARTS_DIR))


def test_splits_are_stable_across_runs(tmp_path, mixed_folder):
    first = {k: s for k, (s, _) in read_examples(run_executor(tmp_path / 'a', mixed_folder)[0]).items()}
    second = {k: s for k, (s, _) in read_examples(run_executor(tmp_path / 'b', mixed_folder)[0]).items()}
    assert first == second


def test_too_many_bad_files_fail_naming_the_worst(tmp_path, mixed_folder):
    with pytest.raises(RuntimeError, match=r'6 of 31 input files .* above max_bad_fraction=10\.00%.*Worst files: .*undecodable'):
        run_executor(tmp_path, mixed_folder, max_bad_fraction=0.1)


def test_kaggle_style_flat_folder(tmp_path):
    root = tmp_path / 'train'
    for i in range(4):
        write(str(root / f'cat.{i}.jpg'), jpeg_bytes())
        write(str(root / f'dog.{i}.jpg'), jpeg_bytes())
    _, report = run_executor(tmp_path, root, pattern='*')
    assert report['examples'] == 8 and report['rejected'] == {}


def test_no_matching_files_is_a_clear_error(tmp_path):
    (tmp_path / 'empty').mkdir()
    with pytest.raises(ValueError, match='No files match input pattern'):
        listing.list_entries(str(tmp_path / "empty"), "*/*")


def test_real_odd_files_are_reported_not_crashing(tmp_path, shared_dir):
    root = tmp_path / 'odd'
    odd = glob.glob(os.path.join(shared_dir, 'data', 'odd_files', '*', '*')) + glob.glob(
        os.path.join(shared_dir, 'data', 'odd_files', '*', '.*'))
    for path in odd:
        kind = os.path.basename(os.path.dirname(path))
        write(str(root / 'cats' / f'{kind}_{os.path.basename(path)}'), open(path, 'rb').read())
    for i in range(20):
        write(str(root / 'dogs' / f'd{i}.jpg'), jpeg_bytes())
    _, report = run_executor(tmp_path, root, max_bad_fraction=1.0)
    assert report['total_files'] == 20 + len(odd) == 25
    assert report['rejected'] == {'lfs_pointer': 2, 'undecodable': 1}
    assert report['converted'] == {'grayscale': 2}


@pytest.mark.parametrize('kwargs,message', [
    ({'train_fraction': 1.0}, 'train_fraction must be between 0.01 and 0.99'),
    ({'train_fraction': 0.999}, 'train_fraction must be between 0.01 and 0.99'),
    ({'max_bad_fraction': -0.1}, 'max_bad_fraction must be between 0 and 1'),
])
def test_component_rejects_bad_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        component.ImageExampleGen(input_base='/data', class_names=['cat', 'dog'], **kwargs)


def test_train_fraction_sets_hash_buckets():
    gen = component.ImageExampleGen(input_base='/data', class_names=['cat', 'dog'], train_fraction=0.7)
    assert '"hash_buckets": 70' in gen.exec_properties['output_config']
    assert '"partition_feature_name": "duplicate_group"' in gen.exec_properties['output_config']


def test_three_classes_from_the_component_parameters(tmp_path):
    root = tmp_path / 'zoo'
    for name in ('cats', 'dogs', 'Rabbits'):
        for i in range(5):
            write(str(root / name / f'{i}.jpg'), jpeg_bytes(color=(i * 40, 90, 90)))
    write(str(root / 'rabbit.3.jpg'), jpeg_bytes())  # a class file name outside any class folder
    examples_uri, summary = run_executor(tmp_path, root, pattern='*', class_names=('cat', 'dog', 'rabbit'))
    assert summary['rejected'] == {} and summary['examples'] == 1
    examples_uri, summary = run_executor(tmp_path / 'b', root, class_names=('cat', 'dog', 'rabbit'))
    labels_read = [example.features.feature[features.LABEL_KEY].bytes_list.value[0]
                   for _, example in read_examples(examples_uri).values()]
    assert sorted(set(labels_read)) == [b'cat', b'dog', b'rabbit'] and labels_read.count(b'rabbit') == 5


@pytest.mark.parametrize('path,message', [
    ('cat/dog.5.jpg', "the folder says 'cat', the file name says 'dog'"),
    ('cats/dog.5.jpg', "the folder says 'cat', the file name says 'dog'"),
])
def test_a_file_name_that_contradicts_its_class_folder_is_a_mismatch(path, message):
    with pytest.raises(FileRejected, match=message) as error:
        CATS_AND_DOGS.from_path(path)
    assert error.value.reason == 'label_mismatch'


def test_file_names_only_count_when_they_name_a_class():
    assert CATS_AND_DOGS.from_path('cat/photo.12.jpg') == 'cat'
    assert labels.LabelRule(('cat', 'dog'), file_name_pattern='').from_path('dog.1.jpg') is None


@pytest.mark.parametrize('kwargs,message', [
    ({'class_names': ('cat',)}, 'two or more distinct names'),
    ({'class_names': ('cat', 'Dog')}, 'lower-case'),
    ({'class_names': ('cat', 'dog'), 'file_name_pattern': r'^(\w+)\.'}, r'needs a \(\?P<label>...\) group'),
    ({'class_names': ('cat', 'dog'), 'file_name_pattern': r'^(?P<label>['}, 'is not a regular expression'),
])
def test_label_rule_rejects_bad_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        labels.LabelRule(**kwargs)


def test_one_file_becomes_an_example_without_beam(tmp_path):
    path = tmp_path / 'dogs' / 'd1.png'
    write(str(path), png_bytes(Image.new('L', (16, 12), 200)))
    lighting = records.LightingRule(frozenset(features.NIGHT_HOURS), features.NIGHT_BRIGHTNESS)
    example, conversion, fingerprint = records.file_to_example(str(path), 'dogs/d1.png', {'camera_id': ' cam-7 '},
                                                               CATS_AND_DOGS, lighting, max_file_bytes=10 ** 6)
    feature = example.features.feature
    assert conversion == 'grayscale'
    image_id, label, digest, dhash, thumbnail = fingerprint
    assert (image_id, label, len(digest), dhash, len(thumbnail)) == ('dogs/d1.png', 'dog', 64, 0, 256)  # flat
    assert feature[features.DUPLICATE_GROUP_KEY].bytes_list.value == [b'dogs/d1.png']
    buckets = {key: feature[key].bytes_list.value[0] for key in
               (features.BRIGHTNESS_BUCKET_KEY, features.RESOLUTION_BUCKET_KEY, features.ASPECT_BUCKET_KEY)}
    assert buckets == {features.BRIGHTNESS_BUCKET_KEY: b'bright', features.RESOLUTION_BUCKET_KEY: b'under_128',
                       features.ASPECT_BUCKET_KEY: b'landscape'}  # luma 200/255, 16x12
    assert feature[features.LABEL_KEY].bytes_list.value == [b'dog']
    assert feature[features.CAMERA_KEY].bytes_list.value == [b'cam-7']
    assert feature[features.LIGHTING_KEY].bytes_list.value == [b'day']  # bright, no capture time
    assert (feature[features.WIDTH_KEY].int64_list.value[0], feature[features.HEIGHT_KEY].int64_list.value[0]) == (16, 12)
    with pytest.raises(FileRejected) as error:
        records.file_to_example(str(path), 'dogs/d1.png', {'label': 'cat'}, CATS_AND_DOGS, lighting, 10 ** 6)
    assert error.value.reason == 'label_mismatch'
    with pytest.raises(FileRejected) as error:
        records.file_to_example(str(path), 'dogs/d1.png', {}, CATS_AND_DOGS, lighting, max_file_bytes=10)
    assert error.value.reason == 'too_large'


def test_report_counts_every_status_and_fails_above_the_budget():
    statuses = [dict(zip(report.STATUS_FIELDS, row)) for row in [
        (report.ACCEPTED, '', 'a.jpg', ''), (report.CONVERTED, 'cmyk', 'b.jpg', ''),
        (report.REJECTED, 'truncated', 'c.jpg', 'cut'), (report.REJECTED, 'truncated', 'd.jpg', 'cut')]]
    summary = report.summarize(statuses)
    assert (summary['total_files'], summary['examples'], summary['rejected_fraction']) == (4, 2, 0.5)
    report.check_report(summary, 0.5)
    with pytest.raises(RuntimeError, match=r'2 of 4 input files .*Worst files: c.jpg \(truncated\); d.jpg'):
        report.check_report(summary, 0.4)


@pytest.fixture
def hostile_folder(tmp_path):
    """Good photos, and every directory entry that once aborted or hung ingestion."""
    root = tmp_path / 'data' / 'span-2'
    for i in range(6):
        write(str(root / 'cats' / f'c{i}.jpg'), jpeg_bytes())
        write(str(root / 'dogs' / f'd{i}.jpg'), jpeg_bytes())
    with open(os.path.join(os.fsencode(str(root / 'cats')), b'\xff\xfe-photo.jpg'), 'wb') as f:
        f.write(jpeg_bytes())  # a name that is not UTF-8
    os.symlink('nowhere.jpg', root / 'cats' / 'gone.jpg')
    os.symlink('loop.jpg', root / 'cats' / 'loop.jpg')
    os.mkfifo(root / 'dogs' / 'camera-feed.jpg')
    write(str(tmp_path / 'elsewhere' / 'secret.jpg'), jpeg_bytes())
    os.symlink(tmp_path / 'elsewhere' / 'secret.jpg', root / 'dogs' / 'outside.jpg')
    os.symlink('d1.jpg', root / 'dogs' / 'alias.jpg')  # inside the data root: read like any file
    write(str(root / 'cats' / 'dog.5.jpg'), jpeg_bytes())  # a dog's name in the cat folder
    write(str(tmp_path / 'data' / 'span-1' / 'cats' / 'c.jpg'), jpeg_bytes())
    return tmp_path / 'data'


HOSTILE_REJECTIONS = {'bad_file_name': 1, 'dangling_symlink': 1, 'symlink_loop': 1, 'not_a_regular_file': 1,
                      'symlink_outside_root': 1, 'label_mismatch': 1}


def test_hostile_directory_entries_are_rejected_with_a_reason(tmp_path, hostile_folder):
    import signal
    signal.alarm(120)  # a FIFO that is opened for reading would hang here forever
    try:
        _, summary = run_executor(tmp_path, hostile_folder, pattern='span-2/*/*', max_bad_fraction=1.0)
    finally:
        signal.alarm(0)
    assert summary['rejected'] == HOSTILE_REJECTIONS
    assert summary['examples'] == 13 and summary['total_files'] == 19
    details = {f['reason']: (f['image'], f['detail']) for f in summary['rejected_files']}
    assert details['bad_file_name'][0] == 'cats/\\xff\\xfe-photo.jpg'
    assert details['not_a_regular_file'] == ('dogs/camera-feed.jpg', 'a FIFO; it is never opened')
    assert 'secret.jpg' in details['symlink_outside_root'][1]
    json.dumps(summary)  # the report is valid JSON text


def test_symlinks_outside_the_root_are_read_when_allowed(tmp_path, hostile_folder):
    _, summary = run_executor(tmp_path, hostile_folder, pattern='span-2/*/*', max_bad_fraction=1.0,
                              allow_symlinks_outside_root=True)
    assert 'symlink_outside_root' not in summary['rejected'] and summary['examples'] == 14


def test_the_driver_resolves_spans_and_fingerprints_a_hostile_folder(hostile_folder):
    from petpark.components.image_example_gen import driver
    gen = component.ImageExampleGen(input_base=str(hostile_folder), class_names=['cat', 'dog'],
                                    input_pattern='span-{SPAN}/*/*')
    properties = driver.ImageFolderDriver(None).resolve_exec_properties(dict(gen.exec_properties), None, None)
    assert properties['span'] == 2
    assert 'span-2/*/*' in properties['input_config']
    assert 'split:single_split,num_files:19,' in properties['input_fingerprint']
    os.remove(hostile_folder / 'span-2' / 'cats' / 'gone.jpg')
    again = driver.ImageFolderDriver(None).resolve_exec_properties(dict(gen.exec_properties), None, None)
    assert again['input_fingerprint'] != properties['input_fingerprint']


def photo(seed, size=(64, 64)):
    """A smooth random picture (a 6x6 random image enlarged), unlike any other seed's."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize(size, Image.BICUBIC)


def encoded(image, size=None, quality=90):
    buffer = io.BytesIO()
    (image.resize(size, Image.BILINEAR) if size else image).save(buffer, format='JPEG', quality=quality)
    return buffer.getvalue()


def test_exact_and_near_duplicates_are_reported_and_kept_in_one_split(tmp_path):
    """A byte copy and a squashed, re-encoded copy of a photo are found; each group is in one
    split, so no duplicate pair straddles train and eval; distinct photos are not grouped."""
    root = tmp_path / 'photos'
    for i in range(40):
        write(str(root / 'cats' / f'c{i}.jpg'), encoded(photo(i)))
        write(str(root / 'dogs' / f'd{i}.jpg'), encoded(photo(1000 + i)))
    for i in range(20):  # the 128 px set repeats train photos at another size and quality
        write(str(root / 'cats' / f'c{i}_small.jpg'), encoded(photo(i), size=(40, 32), quality=70))
    write(str(root / 'dogs' / 'd0_copy.jpg'), encoded(photo(1000)))
    examples_uri, summary = run_executor(tmp_path, root)
    found = summary['duplicates']
    assert found['exact_pairs'] == 1 and found['near_pairs'] == 20
    assert found['groups'] == 21 and found['photos_in_groups'] == 42
    assert found['groups_with_conflicting_labels'] == 0
    assert len(found['largest_groups']) == 20 and all(len(ids) == 2 for ids in found['largest_groups'])
    examples = read_examples(examples_uri)
    group = {image_id: example.features.feature[features.DUPLICATE_GROUP_KEY].bytes_list.value[0].decode()
             for image_id, (_, example) in examples.items()}
    assert group['cats/c3_small.jpg'] == group['cats/c3.jpg'] == 'cats/c3.jpg'
    assert group['dogs/d0_copy.jpg'] == 'dogs/d0.jpg' and group['dogs/d5.jpg'] == 'dogs/d5.jpg'
    for i in range(20):
        assert examples[f'cats/c{i}_small.jpg'][0] == examples[f'cats/c{i}.jpg'][0]
    assert examples['dogs/d0_copy.jpg'][0] == examples['dogs/d0.jpg'][0]
    assert {split for split, _ in examples.values()} == {'train', 'eval'}


def test_flat_pictures_are_duplicates_only_when_identical():
    black, red = Image.new('RGB', (32, 32), (0, 0, 0)), Image.new('RGB', (32, 32), (200, 0, 0))
    found = duplicates.find([duplicates.fingerprint('a', 'cat', black), duplicates.fingerprint('b', 'cat', red),
                             duplicates.fingerprint('c', 'dog', black.copy())])
    assert found['group_of'] == {'a': 'a', 'c': 'a'}
    assert found['report']['exact_pairs'] == 1 and found['report']['near_pairs'] == 0
    assert found['report']['conflicting_labels'] == [{'a': 'cat', 'c': 'dog'}]


@pytest.mark.parametrize('width,height,brightness,expected', [
    (500, 374, 0.45, ('medium', '256_to_511', 'landscape')),
    (320, 480, 0.1, ('dark', '256_to_511', 'portrait')),
    (128, 128, 0.7, ('bright', '128_to_255', 'square')),
    (1050, 768, 0.29, ('dark', '512_and_over', 'landscape')),
])
def test_image_derived_slices(width, height, brightness, expected):
    buckets = features.image_buckets(width, height, brightness)
    assert (buckets[features.BRIGHTNESS_BUCKET_KEY], buckets[features.RESOLUTION_BUCKET_KEY],
            buckets[features.ASPECT_BUCKET_KEY]) == expected


def test_pooled_folders_and_a_hold_out_split(tmp_path):
    """Two folders pooled into train/eval (ids prefixed by their folder), a third held out as the
    `validation` split; a pooled copy of a held-out photo is withheld from training and reported."""
    root = tmp_path / 'photos'
    for i in range(12):
        write(str(root / 'train' / 'cats' / f'{i}.jpg'), encoded(photo(i)))
        write(str(root / 'more' / 'cats' / f'{i}.jpg'), encoded(photo(100 + i)))  # same names, other photos
        write(str(root / 'more' / 'dogs' / f'{i}.jpg'), encoded(photo(200 + i)))
    for i in range(4):
        write(str(root / 'validation' / 'dogs' / f'{i}.jpg'), encoded(photo(300 + i)))
    write(str(root / 'more' / 'dogs' / 'leak.jpg'), encoded(photo(300), size=(40, 40), quality=70))
    examples_uri, summary = run_executor(tmp_path, root, pattern=['train/*/*', 'more/*/*'],
                                         holdout_pattern='validation/*/*')
    assert summary['total_files'] == 41 and summary['examples'] == 41
    assert summary['duplicates']['withheld_from_training'] == 1
    assert summary['duplicates']['withheld'] == ['more/dogs/leak.jpg']
    examples = read_examples(examples_uri, ('train', 'eval', 'validation'))
    held_out = sorted(i for i, (split, _) in examples.items() if split == 'validation')
    assert held_out == [f'validation/dogs/{i}.jpg' for i in range(4)]
    pooled = {i for i, (split, _) in examples.items() if split != 'validation'}
    assert len(pooled) == 36 and 'more/dogs/leak.jpg' not in pooled
    assert {'train/cats/0.jpg', 'more/cats/0.jpg'} <= pooled
    label = examples['more/dogs/3.jpg'][1].features.feature[features.LABEL_KEY].bytes_list.value[0]
    assert label == b'dog'  # read from the class folder below the prefix


@pytest.mark.parametrize('kwargs,message', [
    (dict(input_pattern=['a/*/*', 'a/*/*']), 'folder of their own'),
    (dict(input_pattern=['*/*'], holdout_pattern='v/*/*'), 'folder of their own'),
    (dict(input_pattern=['span-{SPAN}/*/*'], holdout_pattern='v/*/*'), 'SPAN'),
    (dict(input_pattern=[]), 'at least one'),
])
def test_pooled_and_hold_out_patterns_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        component.ImageExampleGen(input_base='/data', class_names=['cat', 'dog'], **kwargs)


def test_metadata_rows_without_a_file_are_reported_and_never_opened(tmp_path):
    """Rows naming a missing file, a path outside the image root (one a FIFO: opening it would hang),
    an absolute path, a 5,000-character name and nothing are each listed, cut to 200 characters; they
    are no input file, so the counts and the budget do not change."""
    import signal
    root = tmp_path / 'photos'
    for i in range(3):
        write(str(root / 'cats' / f'c{i}.jpg'), jpeg_bytes())
        write(str(root / 'dogs' / f'd{i}.jpg'), jpeg_bytes())
    (tmp_path / 'outside').mkdir()
    os.mkfifo(tmp_path / 'outside' / 'feed.jpg')
    long_name = 'cats/' + 'x' * 4995
    with open(root / 'metadata.csv', 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(['image', 'label', 'camera_id'])
        for image in ('cats/c0.jpg', 'cats/missing.jpg', '../../../etc/passwd', '../outside/feed.jpg', '/etc/shadow',
                      long_name, ''):
            writer.writerow([image, '', 'cam-1'])
    signal.alarm(120)  # a FIFO that is opened for reading would hang here forever
    try:
        examples_uri, summary = run_executor(tmp_path, root, max_bad_fraction=0.0)
    finally:
        signal.alarm(0)
    outside = 'a path outside the image root; never opened'
    no_file = 'no file the input pattern matches has this path'
    assert summary['metadata_rows_without_file'] == [
        {'image': '', 'reason': 'empty_image', 'detail': 'the row names no image'},
        {'image': '../../../etc/passwd', 'reason': 'outside_image_root', 'detail': outside},
        {'image': '../outside/feed.jpg', 'reason': 'outside_image_root', 'detail': outside},
        {'image': '/etc/shadow', 'reason': 'outside_image_root', 'detail': outside},
        {'image': 'cats/missing.jpg', 'reason': 'no_matching_file', 'detail': no_file},
        {'image': long_name[:200] + '... (5000 characters)', 'reason': 'no_matching_file', 'detail': no_file},
    ]
    assert (summary['total_files'], summary['examples'], summary['rejected']) == (6, 6, {})
    camera = read_examples(examples_uri)['cats/c0.jpg'][1].features.feature[features.CAMERA_KEY]
    assert camera.bytes_list.value == [b'cam-1']  # rows that name a file still apply


def test_a_folder_named_like_an_image_is_reported_but_not_a_rejected_file(tmp_path):
    """`cats/dir.jpg/` matches `*/*`: a line in the report (`skipped`), not a rejected file, since
    nothing a folder holds was ever an input (the pattern `*` over class folders matches only folders
    beside the photos, and must not fail the budget); nor does it move the input fingerprint."""
    root = tmp_path / 'photos'
    for i in range(3):
        write(str(root / 'cats' / f'cat.{i}.jpg'), jpeg_bytes())
        write(str(root / 'dogs' / f'dog.{i}.jpg'), jpeg_bytes())
    fingerprint_before = listing.resolve(str(root), [example_gen_pb2.Input.Split(name='all', pattern='*/*')], None)[0]
    write(str(root / 'cats' / 'dir.jpg' / 'inside.jpg'), jpeg_bytes())
    assert listing.resolve(str(root), [example_gen_pb2.Input.Split(name='all', pattern='*/*')], None)[0] == \
        fingerprint_before
    _, summary = run_executor(tmp_path, root, max_bad_fraction=0.0)
    assert summary['skipped'] == {'directory': 1}
    assert summary['skipped_entries'] == [{'image': 'cats/dir.jpg', 'reason': 'directory',
                                           'detail': 'a folder the input pattern matches; nothing in it is read'}]
    assert (summary['total_files'], summary['examples'], summary['rejected']) == (6, 6, {})
    _, flat = run_executor(tmp_path / 'flat', root / 'cats', pattern='*', max_bad_fraction=0.0)
    assert (flat['examples'], flat['rejected'], flat['skipped']) == (3, {}, {'directory': 1})
