"""Classified frames logged (sampled) in the monitor's format, request_origin = the camera; a full or
read-only log folder (or events folder) never stops classification; the Prometheus metrics carry
the status line's numbers."""
import io
import os
import struct
import subprocess
import urllib.request

import pytest
from PIL import Image

from petpark.serving import request_log
from petpark.serving.camera import config, wire
from petpark.serving.camera.backends import EdgeBackend
from petpark.serving.camera.events import EventSink
from petpark.serving.camera.status import MetricsCollector, serve_metrics, status_line
from tests.serving.camera import streams
from tests.serving.camera.conftest import wait_until

FRAMES = 20


def records(folder):
    """The PredictionLogs of every complete TFRecord file in `folder`."""
    found = []
    for name in sorted(os.listdir(folder)):
        if not name.endswith('.tfrecord'):
            continue
        data = open(os.path.join(folder, name), 'rb').read()
        at = 0
        while at < len(data):
            (length,) = struct.unpack('<Q', data[at:at + 8])
            found.append(data[at + 12:at + 12 + length])
            at += 12 + length + 4
    return found


def prediction_log(record):
    """(model name, version, signature, request_origin, image bytes, scores) of a PredictionLog."""
    top = {number: value for number, _, value in wire.fields(record)}
    metadata = {number: value for number, _, value in wire.fields(top[1])}
    spec = {number: value for number, _, value in wire.fields(metadata[1])}
    version = {n: v for n, _, v in wire.fields(spec[2])}[1]
    predict = {number: value for number, _, value in wire.fields(top[6])}
    request = [v for n, _, v in wire.fields(predict[1]) if n == 2]
    (entry,) = request
    entry = {n: v for n, _, v in wire.fields(entry)}
    response = {n: v for n, _, v in wire.fields(predict[2])}
    outputs = {n: v for n, _, v in wire.fields(response[1])}
    return (spec[1].decode(), version, spec[3].decode(), metadata[6].decode(), wire.tensor_value(entry[2])[0],
            wire.tensor_value(outputs[2]))


def play(loops, tmp_path, model_dir, **kwargs):
    video = str(tmp_path / 'park.mp4')
    streams.write_video(video, ['cat'] * FRAMES)
    loop = loops([config.camera('gate', video, 'test')], EdgeBackend(model_dir), **kwargs)
    wait_until(loop.done.is_set, 30, message='the file played out')
    loop.stop()
    return loop


def test_classified_frames_are_logged_in_the_monitors_format(tmp_path, model_dir, loops):
    logs = str(tmp_path / 'logs')
    logger = request_log.RequestLogger(request_log.RotatingFiles(os.path.join(logs, 'petpark')), 1.0)
    loop = play(loops, tmp_path, model_dir, sink=EventSink(), request_logger=logger, log_sampling=1.0)
    found = [prediction_log(r) for r in records(logs)]
    assert len(found) == FRAMES == loop.stats['gate'].snapshot()['counts']['classified']
    for name, version, signature, origin, image, scores in found:
        assert (name, version, signature, origin) == ('petpark', 1, 'serving_image_bytes', 'gate')
        assert Image.open(io.BytesIO(image)).size == (320, 240) and scores.shape == (1, 2) and scores[0, 0] > 0.99
    assert loop.info()['request_log'] == {'logged': FRAMES}


@pytest.fixture
def small_disks(tmp_path):
    """{'full': a 64 KiB tmpfs, 'read_only': a read-only tmpfs}, unmounted after the test."""
    mounted = []
    for name, options in (('full', 'size=64k'), ('read_only', 'ro,size=64k')):
        path = tmp_path / name
        path.mkdir()
        result = subprocess.run(['mount', '-t', 'tmpfs', '-o', options, 'tmpfs', str(path)], capture_output=True,
                                text=True)
        if result.returncode != 0:
            for done in mounted:
                subprocess.run(['umount', done])
            pytest.skip(f'cannot mount a tmpfs here (needs root): {result.stderr.strip()}')
        mounted.append(str(path))
    yield {'full': str(tmp_path / 'full'), 'read_only': str(tmp_path / 'read_only')}
    for path in mounted:
        subprocess.run(['umount', '-l', path], check=True)


@pytest.mark.parametrize('disk', ['full', 'read_only'])
def test_a_full_or_read_only_folder_never_stops_classification(tmp_path, model_dir, loops, small_disks, disk):
    folder = small_disks[disk]
    logger = request_log.RequestLogger(request_log.RotatingFiles(os.path.join(folder, 'logs', 'petpark')), 1.0)
    sink = EventSink(os.path.join(folder, 'events'))
    loop = play(loops, tmp_path, model_dir, sink=sink, request_logger=logger, log_sampling=1.0)
    counts = loop.stats['gate'].snapshot()['counts']
    assert counts['classified'] == FRAMES and counts.get('failed', 0) == 0
    assert [(e.kind, e.label) for e in loop.events] == [('start', 'cat'), ('end', 'cat')]
    dropped = loop.info()['request_log']
    reason = 'disk_full' if disk == 'full' else 'read_only'
    assert dropped.get(reason, 0) >= 1 and dropped.get(reason, 0) + dropped.get('logged', 0) == FRAMES, dropped
    if disk == 'read_only':
        assert sink.snapshot_counts() == {'dropped:snapshot': 1, 'dropped:file': 2}


def test_the_metrics_carry_the_status_lines_numbers(tmp_path, model_dir, loops):
    loop = play(loops, tmp_path, model_dir, sink=EventSink())
    server, port = serve_metrics('127.0.0.1:0', MetricsCollector(loop.stats, loop.info))
    try:
        text = urllib.request.urlopen(f'http://127.0.0.1:{port}/metrics', timeout=10).read().decode()
    finally:
        server.shutdown()
        server.server_close()
    snap = loop.stats['gate'].snapshot()
    values = {}
    for line in text.splitlines():
        if line.startswith('petpark_camera_'):
            key, value = line.rsplit(' ', 1)
            values[key] = float(value)
    counts = snap['counts']
    assert values['petpark_camera_frames_classified_total{camera="gate"}'] == counts['classified'] == FRAMES
    assert values['petpark_camera_frames_received_total{camera="gate"}'] == counts['received']
    assert values['petpark_camera_frames_skipped_total{camera="gate"}'] == counts.get('skipped', 0)
    assert values['petpark_camera_events_total{camera="gate",class="cat"}'] == 1
    assert values['petpark_camera_latency_seconds{camera="gate",quantile="0.95"}'] == pytest.approx(snap['p95'])
    assert values['petpark_camera_decision_latency_seconds_count{camera="gate"}'] == FRAMES
    assert values['petpark_camera_model_info{backend="edge",model_name="petpark",version="1"}'] == 1
    assert values['petpark_camera_backend_up'] == 1
    line = status_line(snap)
    assert f"p95 {snap['p95'] * 1000:.0f} ms" in line and 'skipped 0' in line and line.startswith('gate ')
