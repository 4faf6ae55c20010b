"""Events, not frames: per camera, the per-frame scores become debounced presences ("dog present
from 12:03:05 to 12:03:41, peak 0.97, 212 frames"), written as JSON lines, posted to a webhook,
with a snapshot JPEG each.

A frame votes for a class only when its score is clear of the model's decision threshold (the
version's metadata.json): P(positive) >= t + margin * (1 - t) votes for the positive class,
P(positive) <= t * (1 - margin) for the other; in between it votes for nothing (a two-class model
has no "empty" class: an empty scene scores near the threshold). A presence starts when `enter`
of the last `window` frames voted for its class, and ends when none has for `exit_seconds`
(frame times, so skipped frames and changing frame rates do not end it early). Each class is
tracked on its own: a cat and a dog can be present at once.

The EventSink writes in its own thread from a bounded queue: a full disk, a read-only folder or
an unreachable webhook loses records (counted, logged at most every 30 s), never a decision.
"""
import collections
import dataclasses
import datetime
import json
import logging
import os
import queue
import threading
import time
import urllib.request
from typing import Callable, Dict, List, Optional, Sequence

from petpark.serving.log_limits import RateLimitedLog

_log = logging.getLogger('petpark.serving.camera')


def iso(wall: float) -> str:
    return datetime.datetime.fromtimestamp(wall, datetime.timezone.utc).isoformat(timespec='milliseconds').replace(
        '+00:00', 'Z')


def clock_time(wall: float) -> str:
    return datetime.datetime.fromtimestamp(wall).strftime('%H:%M:%S')


@dataclasses.dataclass
class Event:
    """A presence: a `start` record when it begins, an `end` record (the same id) when it ends."""
    kind: str  # start | end
    id: str
    camera: str
    label: str
    start: float  # wall time of the first frame that voted for it
    end: Optional[float]  # wall time of the last frame that voted for it (end records)
    peak: float  # the class's highest score in the presence
    frames: int  # frames that voted for the class during the presence
    model_name: str
    version: Optional[int]
    threshold: float
    reason: str = ''  # end records: left, stream ended, stopped
    snapshot: Optional[str] = None

    def record(self) -> dict:
        record = {'event': self.kind, 'id': self.id, 'camera': self.camera, 'class': self.label,
                  'start': iso(self.start), 'peak': round(self.peak, 4), 'frames': self.frames,
                  'model_name': self.model_name, 'version': self.version, 'threshold': self.threshold}
        if self.kind == 'end':
            record.update(end=iso(self.end), duration_s=round(self.end - self.start, 3), reason=self.reason)
        if self.snapshot:
            record['snapshot'] = self.snapshot
        return record

    def text(self) -> str:
        if self.kind == 'start':
            return f'{self.label} present since {clock_time(self.start)} (peak {self.peak:.2f})'
        return (f'{self.label} present from {clock_time(self.start)} to {clock_time(self.end)}, peak {self.peak:.2f}, '
                f'{self.frames} frames')


def vote(scores: Sequence[float], class_names: Sequence[str], positive: int, threshold: float,
         margin: float) -> Optional[str]:
    """The class a frame votes for, or None when its score is too close to the threshold."""
    if len(class_names) == 2:
        p = float(scores[positive])
        if p >= threshold + margin * (1 - threshold):
            return class_names[positive]
        if p <= threshold * (1 - margin) and not (margin == 0 and p == threshold):
            return class_names[1 - positive]
        return None
    best = max(range(len(class_names)), key=lambda i: scores[i])
    floor = 1 / len(class_names)
    return class_names[best] if scores[best] >= floor + margin * (1 - floor) else None


@dataclasses.dataclass
class _Presence:
    start: float
    last_seen: float
    peak: float
    frames: int
    id: str
    model_name: str
    version: Optional[int]
    threshold: float
    snapshot: Optional[str]


class Debouncer:
    """One camera's presences. `update` takes each decided frame in order; `tick` ends presences
    when frames stop coming; `close` ends them all."""

    def __init__(self, camera: str, enter: int = 3, window: int = 5, exit_seconds: float = 1.5, margin: float = 0.5):
        if not 1 <= enter <= window:
            raise ValueError(f'--enter-frames ({enter}) must be from 1 to --window ({window})')
        self.camera, self.enter, self.exit_seconds, self.margin = camera, enter, exit_seconds, margin
        self._recent: collections.deque = collections.deque(maxlen=window)  # (wall, vote, score of that class)
        self._open: Dict[str, _Presence] = {}

    def update(self, wall: float, scores: Sequence[float], class_names: Sequence[str], positive: int,
               threshold: float, model_name: str = '', version: Optional[int] = None,
               snapshot: Callable[[str, float], Optional[str]] = lambda label, wall: None) -> List[Event]:
        """Events this frame ends or starts (ends first). `snapshot(label, wall)` names the snapshot of a
        starting presence (and writes it)."""
        label = vote(scores, class_names, positive, threshold, self.margin)
        score = float(scores[class_names.index(label)]) if label is not None else 0.0
        self._recent.append((wall, label, score))
        events = self.tick(wall)
        if label is None:
            return events
        presence = self._open.get(label)
        if presence is not None:
            presence.last_seen, presence.frames = wall, presence.frames + 1
            presence.peak = max(presence.peak, score)
            return events
        votes = [(at, s) for at, v, s in self._recent if v == label]
        if len(votes) >= self.enter:
            start = votes[0][0]
            ident = f'{self.camera}-{label}-{datetime.datetime.fromtimestamp(start, datetime.timezone.utc):%Y%m%dT%H%M%S.%f}'
            presence = _Presence(start, wall, max(s for _, s in votes), len(votes), ident, model_name, version, threshold,
                                 snapshot(label, wall))
            self._open[label] = presence
            events.append(self._event('start', label, presence))
        return events

    def tick(self, wall: float) -> List[Event]:
        """Ends presences whose class no frame has voted for in exit_seconds before `wall`."""
        ended = [label for label, p in self._open.items() if wall - p.last_seen >= self.exit_seconds]
        return [self._end(label, 'left') for label in ended]

    def close(self, reason: str) -> List[Event]:
        return [self._end(label, reason) for label in list(self._open)]

    def _end(self, label: str, reason: str) -> Event:
        presence = self._open.pop(label)
        self._recent = collections.deque(((at, v, s) for at, v, s in self._recent if v != label),
                                         maxlen=self._recent.maxlen)  # its votes do not start it again
        return self._event('end', label, presence, reason)

    def _event(self, kind: str, label: str, p: _Presence, reason: str = '') -> Event:
        return Event(kind, p.id, self.camera, label, p.start, p.last_seen if kind == 'end' else None, p.peak, p.frames,
                     p.model_name, p.version, p.threshold, reason, p.snapshot)


class EventSink:
    """Writes event records (events.jsonl), snapshots (snapshots/) and webhook posts in one
    background thread; counts what it could not write."""

    def __init__(self, events_dir: Optional[str] = None, webhook: Optional[str] = None, max_queued: int = 256,
                 webhook_attempts: int = 3, webhook_timeout: float = 5.0, retry_seconds: float = 1.0):
        self.events_dir, self.webhook = events_dir, webhook
        self.attempts, self.timeout, self.retry_seconds = webhook_attempts, webhook_timeout, retry_seconds
        self.counts = collections.Counter()  # written, snapshots, posted, dropped:<reason>
        self._lock = threading.Lock()
        self._queue: 'queue.Queue' = queue.Queue(maxsize=max_queued)
        self._log = RateLimitedLog(_log, 30.0)
        self._thread = threading.Thread(target=self._run, name='camera-events', daemon=True)
        self._thread.start()

    def snapshot_name(self, camera: str, label: str, wall: float) -> Optional[str]:
        if not self.events_dir:
            return None
        stamp = datetime.datetime.fromtimestamp(wall, datetime.timezone.utc).strftime('%Y%m%dT%H%M%S.%f')[:-3]
        return os.path.join('snapshots', f'{camera}-{stamp}-{label}.jpg')

    def snapshot(self, relative: str, encoded: Callable[[], bytes]) -> None:
        """Queues a snapshot; `encoded()` (the frame's JPEG) runs in the writer thread."""
        self._put(('snapshot', relative, encoded))

    def emit(self, event: Event) -> None:
        self._put(('event', event.record()))

    def _put(self, item) -> None:
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self._count('dropped:queue_full')

    def _count(self, key: str) -> None:
        with self._lock:
            self.counts[key] += 1

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                if item[0] == 'snapshot':
                    self._write_snapshot(item[1], item[2])
                else:
                    self._write_record(item[1])
            except Exception as e:  # the writer never dies: count, log (rate-limited), go on
                self._count('dropped:error')
                self._log.warning(f'events: {type(e).__name__}: {e}')

    def _write_snapshot(self, relative: str, encoded: Callable[[], bytes]) -> None:
        path = os.path.join(self.events_dir, relative)
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            data = encoded()
            with open(path + '.tmp', 'wb') as f:
                f.write(data)
            os.replace(path + '.tmp', path)
        except OSError as e:
            self._count('dropped:snapshot')
            self._log.warning(f'events: snapshot not written: {e.strerror or e} ({self.events_dir})')
            try:
                os.remove(path + '.tmp')
            except OSError:
                pass
            return
        self._count('snapshots')

    def _write_record(self, record: dict) -> None:
        line = json.dumps(record)
        if self.events_dir:
            try:
                os.makedirs(self.events_dir, exist_ok=True)
                with open(os.path.join(self.events_dir, 'events.jsonl'), 'a') as f:
                    f.write(line + '\n')
                self._count('written')
            except OSError as e:
                self._count('dropped:file')
                self._log.warning(f'events: not written: {e.strerror or e} ({self.events_dir})')
        if self.webhook:
            self._post(line.encode())

    def _post(self, body: bytes) -> None:
        delay = self.retry_seconds
        for attempt in range(self.attempts):
            try:
                request = urllib.request.Request(self.webhook, data=body, method='POST',
                                                 headers={'Content-Type': 'application/json'})
                with urllib.request.urlopen(request, timeout=self.timeout) as reply:
                    reply.read()
                self._count('posted')
                return
            except Exception as e:  # HTTP errors, refused connections, timeouts: retried, then dropped
                error = e
            if attempt + 1 < self.attempts:
                time.sleep(delay)
                delay *= 2
        self._count('dropped:webhook')
        self._log.warning(f'events: webhook {self.webhook}: {type(error).__name__}: {error}')

    def close(self, timeout: float = 10.0) -> None:
        """Writes what is queued, then stops."""
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            pass
        self._thread.join(timeout)

    def snapshot_counts(self) -> Dict[str, int]:
        with self._lock:
            return dict(self.counts)
