"""The camera loop on the edge back-end, against streams served in the test: a scripted sequence
(cat enters, leaves, dog enters) gives one event per presence on every kind of source; a killed
stream server is reconnected within 5 s of its return while the other cameras go on; a stalled
stream is reopened; a slow back-end skips frames (counted) instead of falling behind; a back-end
that goes away is retried."""
import os
import threading
import time

import pytest

from petpark.serving.camera import config
from petpark.serving.camera.backends import BackendUnavailable, EdgeBackend
from petpark.serving.camera.events import EventSink
from tests.serving.camera import streams
from tests.serving.camera.conftest import wait_until

# 10 fps: nobody 1 s, a cat 2 s (one stray dog frame), nobody 2 s, a dog 2.5 s (two frames of
# nobody inside), then nobody.
SCRIPT = [None] * 10 + ['cat'] * 10 + ['dog'] + ['cat'] * 9 + [None] * 20 + ['dog'] * 12 + [None] * 2 + ['dog'] * 11
EXPECTED = [('start', 'cat'), ('end', 'cat'), ('start', 'dog'), ('end', 'dog')]


def scripted(index):
    return SCRIPT[index] if index < len(SCRIPT) else None


def by_camera(loop):
    found = {}
    for event in list(loop.events):
        found.setdefault(event.camera, []).append(event)
    return found


def test_a_scripted_sequence_gives_one_event_per_presence_on_every_kind_of_source(tmp_path, model_dir, loops):
    video = str(tmp_path / 'park.mp4')
    streams.write_video(video, SCRIPT + [None] * 20)
    hls = streams.FileServer(str(tmp_path / 'hls'))
    playlist = streams.write_hls(str(tmp_path / 'hls'), SCRIPT + [None] * 20)
    mjpeg = streams.MjpegServer(scripted, from_connection=True).start()
    rtsp = streams.RtspServer(scripted, from_connection=True).start()
    try:
        cameras = [config.camera('file', video, 'test'), config.camera('mjpeg', mjpeg.url, 'test'),
                   config.camera('rtsp', rtsp.url, 'test'), config.camera('hls', hls.url(playlist), 'test', realtime=True)]
        loop = loops(cameras, EdgeBackend(model_dir), EventSink(str(tmp_path / 'events')))

        def every_camera_saw_both():
            found = by_camera(loop)
            return all(sum(e.kind == 'end' for e in found.get(c.name, [])) >= 2 for c in cameras)
        wait_until(every_camera_saw_both, 40, message='two presences ended on every camera')
        found = by_camera(loop)
        for camera in cameras:
            events = found[camera.name]
            assert [(e.kind, e.label) for e in events[:4]] == EXPECTED, (camera.name, [e.record() for e in events])
            cat, dog = events[1], events[3]
            assert 16 <= cat.frames <= 19 and 19 <= dog.frames <= 23, (camera.name, cat.frames, dog.frames)
            assert 1.4 <= cat.end - cat.start <= 2.4 and 1.9 <= dog.end - dog.start <= 2.9, camera.name
            assert dog.start - cat.end >= 1.5  # nobody in between
            assert cat.reason == 'left' and cat.peak > 0.99 and cat.version == 1 and cat.threshold == 0.5
            assert loop.stats[camera.name].snapshot()['counts'].get('failed', 0) == 0
        snapshots = sorted(os.listdir(tmp_path / 'events' / 'snapshots'))
        assert len(snapshots) >= 8 and all(name.endswith(('-cat.jpg', '-dog.jpg')) for name in snapshots)
    finally:
        mjpeg.stop()
        rtsp.stop()
        hls.stop()


def test_a_killed_stream_server_is_reconnected_within_5_s_of_its_return_and_the_others_go_on(model_dir, loops):
    servers = {'gate': streams.MjpegServer(lambda i: 'dog').start(), 'lawn': streams.RtspServer(lambda i: 'cat').start(),
               'pond': streams.MjpegServer(lambda i: 'cat').start()}
    try:
        cameras = [config.camera(name, server.url, 'test') for name, server in servers.items()]
        loop = loops(cameras, EdgeBackend(model_dir), EventSink(), reconnect_max=2.0)
        stats = loop.stats
        wait_until(lambda: all(s.snapshot()['counts'].get('classified', 0) >= 5 for s in stats.values()), 20,
                   message='every camera classifying')
        servers['gate'].stop()
        servers['lawn'].stop()
        wait_until(lambda: not stats['gate'].snapshot()['connected'] and not stats['lawn'].snapshot()['connected'], 10,
                   message='the killed cameras seen down')
        pond_before = stats['pond'].snapshot()['counts']['classified']
        gate_before = stats['gate'].snapshot()['counts']['received']
        lawn_before = stats['lawn'].snapshot()['counts']['received']
        wait_until(lambda: stats['pond'].snapshot()['counts']['classified'] >= pond_before + 15, 10,
                   message='the camera still up keeps classifying')
        assert stats['gate'].snapshot()['counts']['received'] == gate_before  # really down
        servers['gate'].start()
        servers['lawn'].start()
        back = time.monotonic()
        wait_until(lambda: stats['gate'].snapshot()['counts']['received'] > gate_before
                   and stats['lawn'].snapshot()['counts']['received'] > lawn_before, 5.0,
                   message='both reconnected within 5 s of their servers coming back')
        took = time.monotonic() - back
        for name in ('gate', 'lawn'):
            counts = stats[name].snapshot()['counts']
            assert counts['reconnects'] >= 1 and counts['stream_errors'] >= 1
        wait_until(lambda: stats['gate'].snapshot()['counts']['classified'] > gate_before, 5)
        assert loop._worker.is_alive() and all(r._thread.is_alive() for r in loop.readers.values())
        assert stats['pond'].snapshot()['counts'].get('reconnects', 0) == 0
        print(f'reconnected {took:.2f} s after the servers came back')
    finally:
        for server in servers.values():
            server.stop()


def test_a_stalled_stream_is_reopened(model_dir, loops):
    server = streams.MjpegServer(lambda i: 'dog').start()
    try:
        loop = loops([config.camera('gate', server.url, 'test')], EdgeBackend(model_dir), EventSink(), stall_seconds=1.0)
        stats = loop.stats['gate']
        wait_until(lambda: stats.snapshot()['counts'].get('classified', 0) >= 3, 20)
        server.paused.set()  # the connection stays open, nothing comes
        wait_until(lambda: stats.snapshot()['counts'].get('stream_errors', 0) >= 1, 10, message='the stall noticed')
        server.paused.clear()
        before = stats.snapshot()['counts']['received']
        wait_until(lambda: stats.snapshot()['counts']['received'] > before + 3, 10, message='frames again')
        assert stats.snapshot()['counts']['reconnects'] >= 1
    finally:
        server.stop()


class SlowBackend:
    """The edge back-end behind a delay per batch (a box slower than its cameras), or away."""
    name = 'edge'

    def __init__(self, inner, seconds):
        self.inner, self.seconds, self.away = inner, seconds, threading.Event()
        self.info = inner.info
        self.batches = []

    def classify(self, frames):
        if self.away.is_set():
            raise BackendUnavailable('test: the server is away')
        time.sleep(self.seconds)  # the work a slow model would do (not an ordering wait)
        self.batches.append(len(frames))
        return self.inner.classify(frames)

    def close(self):
        self.inner.close()


def test_a_slow_back_end_skips_frames_newest_first_and_lag_stays_bounded(model_dir, loops):
    servers = [streams.MjpegServer(lambda i: 'dog', fps=30).start() for _ in range(2)]
    try:
        backend = SlowBackend(EdgeBackend(model_dir), 0.2)
        cameras = [config.camera(f'cam{i}', s.url, 'test') for i, s in enumerate(servers)]
        loop = loops(cameras, backend, EventSink())
        wait_until(lambda: all(s.snapshot()['counts'].get('classified', 0) >= 10 for s in loop.stats.values()), 30)
        for stats in loop.stats.values():
            snap = stats.snapshot()
            counts = snap['counts']
            assert counts['skipped'] > counts['classified']  # 30 fps in, at most 5 batches a second out
            # at most one frame waiting in its slot and one being decided
            assert 0 <= counts['received'] - counts['classified'] - counts['skipped'] <= 2
            assert snap['p95'] < 0.5  # decode to decision: one batch's time, never a queue
        assert max(backend.batches) == 2  # one batch carries both cameras
    finally:
        for server in servers:
            server.stop()


def test_a_back_end_that_goes_away_is_retried_while_streams_stay_open(model_dir, loops):
    server = streams.MjpegServer(lambda i: 'cat').start()
    try:
        backend = SlowBackend(EdgeBackend(model_dir), 0.0)
        loop = loops([config.camera('gate', server.url, 'test')], backend, EventSink())
        stats = loop.stats['gate']
        wait_until(lambda: stats.snapshot()['counts'].get('classified', 0) >= 3, 20)
        backend.away.set()
        wait_until(lambda: stats.snapshot()['counts'].get('failed', 0) >= 3, 10, message='failures counted')
        assert not loop.backend_up and stats.snapshot()['connected']
        classified = stats.snapshot()['counts']['classified']
        backend.away.clear()
        wait_until(lambda: stats.snapshot()['counts']['classified'] > classified + 3, 10, message='deciding again')
        assert loop.backend_up and loop._worker.is_alive()
    finally:
        server.stop()


@pytest.mark.parametrize('codec', ['mpeg4', 'mjpeg'])
def test_a_file_plays_at_its_frame_rate_and_every_frame_is_decided(tmp_path, model_dir, loops, codec):
    video = str(tmp_path / f'park-{codec}.avi')
    streams.write_video(video, ['dog'] * 15, fps=10, codec=codec)
    decided = []
    started = time.monotonic()
    loop = loops([config.camera('demo', video, 'test')], EdgeBackend(model_dir), EventSink(),
                 on_decision=lambda frame, result, latency: decided.append(frame.index))
    wait_until(loop.done.is_set, 20, message='the file played out')
    elapsed = time.monotonic() - started
    assert 1.3 <= elapsed <= 6  # 15 frames at 10 fps: 1.4 s of video
    assert decided == list(range(1, 16))  # in order, none skipped
    assert [(e.kind, e.label, e.reason) for e in loop.events] == [('start', 'dog', ''), ('end', 'dog', 'stream ended')]


class BuggyBackend(SlowBackend):
    """Raises an unexpected error on every other batch (a bug, not an unavailable server)."""

    def classify(self, frames):
        self.calls = getattr(self, 'calls', 0) + 1
        if self.calls % 2:
            raise RuntimeError('test: a bug in the back-end')
        return super().classify(frames)


def test_the_classifier_thread_survives_its_own_errors(model_dir, loops, caplog):
    server = streams.MjpegServer(lambda i: 'cat').start()
    try:
        loop = loops([config.camera('gate', server.url, 'test')], BuggyBackend(EdgeBackend(model_dir), 0.0), EventSink())
        wait_until(lambda: loop.stats['gate'].snapshot()['counts'].get('classified', 0) >= 5, 30,
                   message='deciding between the errors')
        assert loop._worker.is_alive()
        errors = [r.getMessage() for r in caplog.records if 'a bug in the back-end' in r.getMessage()]
        assert errors == ['classifier: RuntimeError: test: a bug in the back-end']  # logged once (rate-limited)
    finally:
        server.stop()


def test_a_frame_that_cannot_be_decoded_fails_alone(model_dir):
    from petpark.serving.camera.sources import Frame
    backend = EdgeBackend(model_dir, poll_seconds=0)
    frames = [Frame('gate', 1, 0.0, 0.0, jpeg=streams.jpeg(streams.scene('cat'))),
              Frame('pond', 1, 0.0, 0.0, jpeg=b'\xff\xd8 not a jpeg'),
              Frame('lawn', 1, 0.0, 0.0, rgb=streams.scene('dog'))]
    good, bad, other = backend.classify(frames)
    backend.close()
    assert good.error is None and good.scores[0] > 0.99 and other.error is None and other.scores[1] > 0.99
    assert bad.error.startswith('camera pond: a frame not decided (UnidentifiedImageError')
