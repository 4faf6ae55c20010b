"""Request logs: records TF Serving's own protos read, files that are complete or absent, and
drops that are counted instead of failing a request."""
import os
import subprocess
import threading
import time

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import classification_pb2, predict_pb2, prediction_log_pb2

from petpark.serving import request_log


def read_records(folder):
    """Every PredictionLog in the complete files of `folder`, oldest file first."""
    files = sorted(os.path.join(folder, n) for n in os.listdir(folder) if n.endswith(request_log.RECORD_SUFFIX))
    return [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in tf.data.TFRecordDataset(files)]


def image_request(image: bytes) -> bytes:
    return request_log.image_prediction_log('petpark', 7, [image], [[0.25, 0.75]], 1800000000, origin='cam-02',
                                            sampling_rate=0.5)


def test_records_are_what_tensorflow_serving_reads(tmp_path):
    files = request_log.RotatingFiles(str(tmp_path / 'logs' / 'petpark'))
    files.write(request_log.tfrecord(image_request(b'\xff\xd8jpeg')))
    expected = predict_pb2.PredictRequest()
    expected.model_spec.name, expected.model_spec.signature_name = 'petpark', 'serving_image_bytes'
    expected.model_spec.version.value = 7
    expected.inputs['image_bytes'].CopyFrom(tf.make_tensor_proto([b'\xff\xd8jpeg'], dtype=tf.string))
    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name = 'petpark'
    classify.input.example_list.examples.add().features.feature['image_raw'].bytes_list.value.append(b'x')
    result = classification_pb2.ClassificationResponse()
    result.result.classifications.add().classes.add(label='dog', score=0.9)
    files.write(request_log.tfrecord(request_log.prediction_log(
        'classify', classify.SerializeToString(), result.SerializeToString(), request_log.model_spec('petpark'), 1.0, 5)))
    assert files.finish().endswith('.tfrecord')
    (predicted, classified) = read_records(str(tmp_path / 'logs'))
    assert predicted.predict_log.request == expected
    assert tf.make_ndarray(predicted.predict_log.response.outputs['scores']).tolist() == [[0.25, 0.75]]
    metadata = predicted.log_metadata
    assert (metadata.model_spec.name, metadata.model_spec.version.value, metadata.timestamp_secs,
            metadata.request_origin, metadata.sampling_config.sampling_rate) == ('petpark', 7, 1800000000, 'cam-02', 0.5)
    assert classified.classify_log.request == classify and classified.classify_log.response == result


def test_files_rotate_by_size_and_age_and_only_complete_files_are_readable(tmp_path):
    now = [1000.0]
    files = request_log.RotatingFiles(str(tmp_path / 'p'), max_file_bytes=3000, max_file_seconds=60,
                                      clock=lambda: now[0])
    record = request_log.tfrecord(image_request(b'x' * 900))
    files.write(record)
    (partial,) = os.listdir(tmp_path)
    assert partial.endswith(request_log.PARTIAL_SUFFIX) and read_records(str(tmp_path)) == []
    files.write(record)
    files.write(record)  # past 3000 bytes: complete
    assert len(read_records(str(tmp_path))) == 3 and not [n for n in os.listdir(tmp_path) if n.endswith('.tmp')]
    files.write(record)
    now[0] += 61
    files.finish_if_due()  # a minute old: complete even though small
    assert len(read_records(str(tmp_path))) == 4 and len(os.listdir(tmp_path)) == 2


def test_a_quota_and_a_retention_age_remove_the_oldest_complete_files(tmp_path):
    now = [0.0]
    record = request_log.tfrecord(image_request(b'x' * 1000))
    files = request_log.RotatingFiles(str(tmp_path / 'p'), max_file_bytes=1, quota_bytes=3 * len(record),
                                      retention_seconds=100, clock=lambda: now[0])
    for second in range(5):
        now[0] = second
        files.write(record)  # one record per file
        os.utime(files.complete_files()[-1][2], (second, second))
    assert len(os.listdir(tmp_path)) == 3  # the two oldest were over the quota
    now[0] = 1000
    files.write(record)
    assert len(files.complete_files()) == 1  # everything older than 100 s is gone


def test_a_killed_writer_leaves_no_partial_file_behind_the_next_start(tmp_path):
    dead = subprocess.Popen(['true'])
    dead.wait()
    stale = tmp_path / f'p-20260101T000000-{dead.pid}-1{request_log.PARTIAL_SUFFIX}'
    stale.write_bytes(b'half a record')
    mine = tmp_path / f'p-20260101T000000-{os.getpid()}-9{request_log.PARTIAL_SUFFIX}'
    mine.write_bytes(b'still being written')
    assert request_log.RotatingFiles(str(tmp_path / 'p')).remove_stale_partials() == [stale.name]
    assert mine.exists()


def wait_for(condition, seconds=10.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_sampling_is_decided_first_and_nothing_unsampled_is_built(tmp_path):
    fractions = iter([0.1, 0.9, 0.3, 0.6])
    logger = request_log.RequestLogger(request_log.RotatingFiles(str(tmp_path / 'p')), sampling_rate=0.5,
                                       random_fraction=lambda: next(fractions))
    built = []

    def build(n):
        def record():
            built.append(n)
            return image_request(b'%d' % n)
        return record
    results = [logger.log('petpark', build(n)) for n in range(4)]
    logger.close()
    assert results == [True, False, True, False] and built == [0, 2]
    assert logger.counts() == ({'petpark': 2}, {}) and len(read_records(str(tmp_path))) == 2


def test_a_full_queue_drops_and_counts_without_blocking_the_request(tmp_path):
    release = threading.Event()

    def slow():
        release.wait()
        return image_request(b'slow')
    logger = request_log.RequestLogger(request_log.RotatingFiles(str(tmp_path / 'p')), sampling_rate=1.0, max_queued=2)
    assert logger.log('petpark', slow)
    assert wait_for(lambda: logger._queue.empty())  # the writer holds the first record
    started = time.perf_counter()
    accepted = [logger.log('petpark', lambda: image_request(b'q')) for _ in range(10)]
    assert time.perf_counter() - started < 0.5
    assert accepted == [True, True] + [False] * 8
    release.set()
    logger.close()
    assert logger.counts() == ({'petpark': 3}, {('petpark', 'queue_full'): 8})


def test_a_record_that_fails_to_build_is_counted_and_the_writer_goes_on(tmp_path):
    logger = request_log.RequestLogger(request_log.RotatingFiles(str(tmp_path / 'p')), sampling_rate=1.0)
    logger.log('petpark', lambda: 1 / 0)
    logger.log('petpark', lambda: image_request(b'fine'))
    logger.close()
    assert logger.counts() == ({'petpark': 1}, {('petpark', 'unencodable'): 1})


def test_after_a_failed_write_records_are_dropped_unbuilt_until_the_pause_ends(tmp_path):
    (tmp_path / 'taken').write_text('a file where the log folder should be')
    now = [0.0]
    logger = request_log.RequestLogger(request_log.RotatingFiles(str(tmp_path / 'taken' / 'logs' / 'p')),
                                       sampling_rate=1.0, pause_seconds=5.0, clock=lambda: now[0])
    built = []

    def build():
        built.append(now[0])
        return image_request(b'x')

    def drops():
        return sum(logger.counts()[1].values())

    logger.log('petpark', build)
    deadline = time.monotonic() + 10
    while drops() < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    now[0] = 4.9
    for _ in range(50):
        assert logger.log('petpark', build) is False  # refused on the request path, nothing queued
    assert built == [0.0] and drops() == 51
    now[0] = 5.0
    logger.log('petpark', build)  # the pause is over: one write is tried again
    logger.close()
    assert built == [0.0, 5.0]
    assert logger.counts() == ({}, {('petpark', 'write_error'): 52})


@pytest.mark.skipif(os.geteuid() != 0, reason='making a read-only folder that root cannot write needs a mount')
def test_a_read_only_or_full_disk_drops_records_and_counts_them(tmp_path):
    mount = tmp_path / 'small'
    mount.mkdir()
    if subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', str(mount)]).returncode:
        pytest.skip('cannot mount a tmpfs here')
    try:
        logger = request_log.RequestLogger(request_log.RotatingFiles(str(mount / 'p')), sampling_rate=1.0)
        for _ in range(40):  # ~160 KB into 64 KB
            logger.log('petpark', lambda: image_request(b'x' * 4000))
        logger.close()
        logged, dropped = logger.counts()
        assert dropped[('petpark', 'disk_full')] >= 20 and logged['petpark'] + dropped[('petpark', 'disk_full')] == 40
        assert not [n for n in os.listdir(mount) if n.endswith('.tmp')]  # nothing half-written left
        subprocess.run(['mount', '-o', 'remount,ro', str(mount)], check=True)
        logger = request_log.RequestLogger(request_log.RotatingFiles(str(mount / 'q')), sampling_rate=1.0)
        logger.log('petpark', lambda: image_request(b'y'))
        logger.close()
        assert logger.counts() == ({}, {('petpark', 'read_only'): 1})
    finally:
        subprocess.run(['umount', str(mount)])


def test_crc32c_matches_tensorflow(tmp_path):
    data = np.random.RandomState(0).bytes(5000)
    path = tmp_path / 'one.tfrecord'
    path.write_bytes(request_log.tfrecord(data))
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(path))] == [data]
