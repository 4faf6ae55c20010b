"""Windows of request logs, and live features equal to ingestion's."""
import glob
import io
import os
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image
from tensorflow_serving.apis import classification_pb2

from petpark.components.image_example_gen import labels, records
from petpark.modules import features
from petpark.monitoring import frames, logs
from petpark.pipeline import synthetic_data
from petpark.serving import request_log


def jpeg(seed, size=(64, 48)):
    buffer = io.BytesIO()
    Image.fromarray(np.random.RandomState(seed).randint(0, 255, size[::-1] + (3,), dtype=np.uint8)).save(
        buffer, format='JPEG')
    return buffer.getvalue()


def write(folder, records_, finish=True):
    files = request_log.RotatingFiles(os.path.join(folder, 'petpark'))
    for record in records_:
        files.write(request_log.tfrecord(record))
    if finish:
        files.finish()


def classify_record(version, image, camera, captured_at, dog, stamp):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = 'petpark'
    example = request.input.example_list.examples.add()
    for key, value in ((features.IMAGE_KEY, image), (features.CAMERA_KEY, camera.encode()),
                       (features.CAPTURED_AT_KEY, captured_at.encode())):
        example.features.feature[key].bytes_list.value.append(value)
    response = classification_pb2.ClassificationResponse()
    classes = response.result.classifications.add()
    classes.classes.add(label='cat', score=1 - dog)
    classes.classes.add(label='dog', score=dog)
    return request_log.prediction_log('classify', request.SerializeToString(), response.SerializeToString(),
                                      request_log.model_spec('petpark', version), 1.0, stamp)


def test_a_window_takes_finished_files_of_its_version_and_time(tmp_path):
    write(tmp_path, [request_log.image_prediction_log('petpark', 1, [jpeg(i)], [[0.3, 0.7]], 1000 + i, 'cam-02')
                     for i in range(10)]
          + [request_log.image_prediction_log('petpark', 2, [jpeg(i), jpeg(i + 1)], [[0.9, 0.1], [0.2, 0.8]], 1005)
             for i in range(3)]
          + [classify_record(2, jpeg(50), 'cam-03', '2026-06-01T22:10:00', 0.6, 1006),
             request_log.image_prediction_log('other', 2, [jpeg(7)], [[0.5, 0.5]], 1005)])
    write(tmp_path / 'sub', [request_log.image_prediction_log('petpark', 1, [jpeg(99)], [[0.5, 0.5]], 1003)],
          finish=False)  # still being written: not part of any window
    window = logs.read_window(str(tmp_path), 'petpark', version=1, since=1002, until=1008)
    assert [f.timestamp for f in window.frames] == [1002, 1003, 1004, 1005, 1006, 1007]
    assert all(f.origin == 'cam-02' and f.camera == 'cam-02' and f.score == pytest.approx(0.7) for f in window.frames)
    version2 = logs.read_window(str(tmp_path), 'petpark', version=2)
    assert len(version2.frames) == 7 and [f.score for f in version2.frames][:2] == pytest.approx([0.1, 0.8])
    classified = version2.frames[-1]
    assert (classified.camera, classified.captured_at, classified.score) == ('cam-03', '2026-06-01T22:10:00',
                                                                             pytest.approx(0.6))
    assert [f.timestamp for f in logs.read_window(str(tmp_path), 'petpark', last=3).frames] == [1007, 1008, 1009]


def test_a_damaged_file_is_counted_and_the_rest_is_read(tmp_path):
    write(tmp_path, [request_log.image_prediction_log('petpark', 1, [jpeg(1)], [[0.5, 0.5]], 1000)])
    (tmp_path / 'petpark-broken.tfrecord').write_bytes(b'\x05\x00\x00\x00\x00\x00\x00\x00garbage')
    window = logs.read_window(str(tmp_path), 'petpark')
    assert len(window.frames) == 1 and window.skipped == {'unreadable_file': 1}


def png_header(width, height):
    """A small PNG that says it is width x height: decoded, it would take width x height x 3 bytes."""
    def chunk(kind, data):
        return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data) & 0xFFFFFFFF)
    return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0))
            + chunk(b'IDAT', zlib.compress(b'\x00' * 64)) + chunk(b'IEND', b''))


def test_images_are_size_checked_before_decoding():
    assert frames.size_problem(png_header(50_000, 50_000)) == 'too_many_pixels'
    assert frames.size_problem(png_header(100, 100)) is None
    assert frames.size_problem(b'') == 'no_image'
    frame = logs.Frame('r', 0, 'petpark', 1, 's', '', png_header(50_000, 50_000))
    assert frames.frame_features(frame) == (None, 'too_many_pixels')
    assert frames.frame_features(logs.Frame('r', 0, 'petpark', 1, 's', '', b'not an image'))[1] == 'undecodable'


def photos(shared_dir_or_none, tmp_path, count=200):
    """200 real photos where ../shared is present, synthetic frames otherwise."""
    if shared_dir_or_none:
        found = sorted(glob.glob(os.path.join(shared_dir_or_none, 'data', 'cats_and_dogs_filtered', 'train', '*', '*')))
        return found[::max(1, len(found) // count)][:count]
    synthetic_data.generate(str(tmp_path / 'synthetic'), count, seed=5)
    return sorted(glob.glob(str(tmp_path / 'synthetic' / '*' / '*.jpg')))


def test_live_features_equal_ingestion_features(shared_dir_or_none, tmp_path):
    rule = labels.LabelRule(features.LABELS)
    lighting = records.LightingRule(features.NIGHT_HOURS, features.NIGHT_BRIGHTNESS)
    compared = 0
    for path in photos(shared_dir_or_none, tmp_path):
        relative = os.path.join(os.path.basename(os.path.dirname(path)), os.path.basename(path))
        metadata = {features.CAPTURED_AT_KEY: '2026-06-01T21:00:00'}
        example, _, _ = records.file_to_example(path, relative, metadata, rule, lighting, 64 << 20)
        ingested = example.features.feature
        with open(path, 'rb') as f:
            live, problem = frames.frame_features(logs.Frame('r', 0, 'petpark', 1, 's', '', f.read(),
                                                             captured_at='2026-06-01T21:00:00'))
        assert problem is None
        assert abs(live[features.BRIGHTNESS_KEY] - ingested[features.BRIGHTNESS_KEY].float_list.value[0]) < 0.01
        for key in (features.WIDTH_KEY, features.HEIGHT_KEY, features.GRAYSCALE_KEY):
            assert live[key] == ingested[key].int64_list.value[0], (path, key)
        for key in (features.BRIGHTNESS_BUCKET_KEY, features.RESOLUTION_BUCKET_KEY, features.ASPECT_BUCKET_KEY,
                    features.LIGHTING_KEY):
            assert live[key] == ingested[key].bytes_list.value[0].decode(), (path, key)
        compared += 1
    assert compared == 200


def test_without_a_capture_time_brightness_decides_day_or_night_as_in_ingestion():
    dark = io.BytesIO()
    Image.fromarray(np.full((32, 32, 3), 30, dtype=np.uint8)).save(dark, format='JPEG')
    for image, lighting in ((jpeg(3), 'day'), (dark.getvalue(), 'night')):
        frame = logs.Frame('r', int(time.mktime(time.strptime('2026-06-01 23:30', '%Y-%m-%d %H:%M'))), 'petpark', 1, 's',
                           '', image)
        assert frames.frame_features(frame)[0][features.LIGHTING_KEY] == lighting


def test_a_window_ends_where_a_running_writer_began_its_unfinished_file(tmp_path):
    now = [1_800_000_000.0]
    files = request_log.RotatingFiles(str(tmp_path / 'petpark'), clock=lambda: now[0])
    files.write(request_log.tfrecord(request_log.image_prediction_log('petpark', 1, [jpeg(1)], [[0.5, 0.5]], 1)))
    assert logs.complete_until(str(tmp_path), now[0] + 100) == now[0]  # its records may still land in the window
    (tmp_path / f'petpark-20200101T000000-{2 ** 22 + 7}-1{request_log.PARTIAL_SUFFIX}').write_bytes(b'')  # no writer
    assert logs.complete_until(str(tmp_path), now[0] + 100) == now[0]
    files.finish()
    assert logs.complete_until(str(tmp_path), now[0] + 100) == now[0] + 100
