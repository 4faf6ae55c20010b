"""Debouncing with the model's threshold: one event per presence, no flicker, on scripted scores
with injected frame times; the event sink's files and webhook, and its failures counted."""
import http.server
import json
import threading

import pytest

from petpark.serving.camera import events
from tests.serving.camera.conftest import wait_until

CAT, DOG, NOBODY = [0.99, 0.01], [0.02, 0.98], [0.5, 0.5]
NAMES = ('cat', 'dog')


def run(debouncer, rows, fps=10.0, start=1_000_000.0):
    """Feeds rows of scores at `fps`; returns (kind, class, frames, start, end) of every event, the
    open presences closed at the end."""
    found = []
    for i, scores in enumerate(rows):
        found += debouncer.update(start + i / fps, scores, NAMES, 1, 0.5, 'petpark', 7)
    found += debouncer.close('stream ended')
    return [(e.kind, e.label, e.frames, round(e.start - start, 3), e.end and round(e.end - start, 3)) for e in found]


def test_votes_follow_the_threshold_the_metadata_carries():
    assert events.vote([0.3, 0.7], NAMES, 1, 0.5, 0.5) is None  # inside 0.25..0.75
    assert events.vote([0.2, 0.8], NAMES, 1, 0.5, 0.5) == 'dog'
    assert events.vote([0.8, 0.2], NAMES, 1, 0.5, 0.5) == 'cat'
    assert events.vote([0.3, 0.7], NAMES, 1, 0.3, 0.5) == 'dog'  # a 0.3 threshold: dog from 0.65, cat to 0.15
    assert events.vote([0.8, 0.2], NAMES, 1, 0.3, 0.5) is None
    assert events.vote([0.49, 0.51], NAMES, 1, 0.5, 0.0) == 'dog'  # margin 0: the bare decision
    assert events.vote([0.5, 0.5], NAMES, 1, 0.5, 0.0) == 'dog'  # at the threshold: the positive class, as label()


def test_cat_enters_leaves_and_dog_enters_one_event_per_presence_without_flicker():
    script = ([NOBODY] * 5 + [CAT] * 20 + [DOG] + [CAT] * 10  # a stray dog frame inside the cat's presence
              + [NOBODY] * 30  # the cat left: 3 s of nobody
              + [DOG] + [NOBODY] * 10  # one stray dog frame: no event
              + [DOG] * 30 + [NOBODY, NOBODY] + [DOG] * 10)  # the dog enters; a short occlusion does not split it
    found = run(events.Debouncer('gate', enter=3, window=5, exit_seconds=1.5), script)
    assert found == [
        ('start', 'cat', 3, 0.5, None),
        ('end', 'cat', 30, 0.5, 3.5),
        ('start', 'dog', 3, 7.7, None),
        ('end', 'dog', 40, 7.7, 11.8),
    ]


def test_presences_end_when_frames_stop_and_their_records_pair():
    debouncer = events.Debouncer('gate', enter=2, window=3, exit_seconds=1.0)
    started = []
    for i in range(5):
        started += debouncer.update(100.0 + i * 0.1, DOG, NAMES, 1, 0.5, 'petpark', 7,
                                    snapshot=lambda label, wall: f'snapshots/gate-{label}.jpg')
    assert debouncer.tick(100.9) == []  # 0.5 s after the last dog frame
    (ended,) = debouncer.tick(101.5)
    (begun,) = started
    assert begun.kind == 'start' and ended.kind == 'end' and begun.id == ended.id
    record = ended.record()
    assert record['class'] == 'dog' and record['frames'] == 5 and record['peak'] == 0.98 and record['duration_s'] == 0.4
    assert record['snapshot'] == 'snapshots/gate-dog.jpg' and record['version'] == 7 and record['threshold'] == 0.5
    assert record['reason'] == 'left' and record['start'].endswith('Z')
    assert 'dog present from' in ended.text() and '5 frames' in ended.text()


def test_enter_frames_beyond_the_window_is_refused():
    with pytest.raises(ValueError, match='--enter-frames'):
        events.Debouncer('gate', enter=6, window=5)


class _Receiver(http.server.BaseHTTPRequestHandler):
    bodies = []
    fail_first = 0

    def do_POST(self):
        body = self.rfile.read(int(self.headers['Content-Length']))
        if _Receiver.fail_first > 0:
            _Receiver.fail_first -= 1
            self.send_response(503)
            self.end_headers()
            return
        _Receiver.bodies.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_the_sink_writes_lines_snapshots_and_posts_retrying_a_failing_webhook(tmp_path):
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Receiver.bodies, _Receiver.fail_first = [], 1
    try:
        sink = events.EventSink(str(tmp_path / 'events'), f'http://127.0.0.1:{server.server_address[1]}/hook',
                                retry_seconds=0.05)
        debouncer = events.Debouncer('gate', enter=1, window=1, exit_seconds=0.5)

        def snapshot(label, wall):
            name = sink.snapshot_name('gate', label, wall)
            sink.snapshot(name, lambda: b'\xff\xd8jpeg')
            return name
        for event in debouncer.update(10.0, CAT, NAMES, 1, 0.5, 'petpark', 3, snapshot) + debouncer.close('stopped'):
            sink.emit(event)
        sink.close()
        lines = [json.loads(line) for line in (tmp_path / 'events' / 'events.jsonl').read_text().splitlines()]
        assert [line['event'] for line in lines] == ['start', 'end'] and lines[1]['reason'] == 'stopped'
        assert (tmp_path / 'events' / lines[0]['snapshot']).read_bytes() == b'\xff\xd8jpeg'
        assert [body['event'] for body in _Receiver.bodies] == ['start', 'end']  # the 503 was retried
        assert sink.snapshot_counts() == {'written': 2, 'snapshots': 1, 'posted': 2}
    finally:
        server.shutdown()
        server.server_close()


def test_an_unreachable_webhook_and_an_unwritable_folder_are_counted_never_raised(tmp_path):
    blocker = tmp_path / 'a-file'
    blocker.write_text('')
    sink = events.EventSink(str(blocker / 'events'), 'http://127.0.0.1:9/nothing-listens', webhook_attempts=2,
                            webhook_timeout=1.0, retry_seconds=0.05)
    event = events.Debouncer('gate', enter=1, window=1).update(10.0, CAT, NAMES, 1, 0.5)[0]
    sink.emit(event)
    sink.snapshot('snapshots/x.jpg', lambda: b'jpeg')
    wait_until(lambda: sink.snapshot_counts().get('dropped:webhook') == 1, 20)
    sink.close()
    assert sink.snapshot_counts() == {'dropped:file': 1, 'dropped:webhook': 1, 'dropped:snapshot': 1}
