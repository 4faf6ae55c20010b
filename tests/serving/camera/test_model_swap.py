"""The edge back-end follows labels.json's `stable` (else the newest version): a new version is
loaded beside the running one and swapped in between batches, with no gap in decisions; a version
that does not load, and a missing, half-written or bad labels.json, leave the current model
deciding, said once."""
import os
import threading
import time

from petpark.serving import edge_runtime
from petpark.serving.camera import config
from petpark.serving.camera.backends import EdgeBackend
from petpark.serving.camera.events import EventSink
from tests.serving.camera import streams
from tests.serving.camera.conftest import wait_until


class GatedLoader:
    """EdgeModel, but a load of `gated` waits for `release`: the test sees decisions go on meanwhile."""

    def __init__(self, gated: str):
        self.gated, self.loading, self.release = gated, threading.Event(), threading.Event()

    def __call__(self, model_dir, version, int8, threads):
        if version == self.gated:
            self.loading.set()
            assert self.release.wait(30)
        return edge_runtime.EdgeModel(model_dir, version, int8, threads)


def test_a_new_stable_version_is_loaded_beside_the_old_and_swapped_without_a_gap(model_dir, loops):
    streams.scripted_edge_model(model_dir, 2, invert=True)  # answers the other way: its decisions are told apart
    streams.write_labels(model_dir, stable=1, canary=2)
    server = streams.MjpegServer(lambda i: 'dog').start()
    decisions = []  # (decision time, version, label)
    try:
        loader, said = GatedLoader('2'), []
        backend = EdgeBackend(model_dir, poll_seconds=0.1, loader=loader, announce=said.append)
        assert backend.info.version == 1  # stable, although 2 is newer

        def record(frame, result, latency):
            label = result.model.class_names[int(result.scores.argmax())]
            decisions.append((time.monotonic(), result.model.version, label))
        loop = loops([config.camera('gate', server.url, 'test')], backend, EventSink(), on_decision=record)
        wait_until(lambda: len(decisions) >= 5, 20)
        streams.write_labels(model_dir, stable=2)  # `petpark promote --label stable --version 2`
        assert loader.loading.wait(10)
        during = len(decisions)
        wait_until(lambda: len(decisions) >= during + 10, 10, message='decisions go on while version 2 loads')
        assert {version for _, version, _ in decisions} == {1}
        loader.release.set()
        wait_until(lambda: decisions[-1][1] == 2, 10, message='version 2 deciding')
        wait_until(lambda: sum(v == 2 for _, v, _ in decisions) >= 10, 10)
        versions = [version for _, version, _ in decisions]
        assert versions == sorted(versions)  # 1 then 2, never back
        assert {label for _, v, label in decisions if v == 1} == {'dog'} and \
            {label for _, v, label in decisions if v == 2} == {'cat'}  # the inverted model
        gaps = [b[0] - a[0] for a, b in zip(decisions, decisions[1:])]
        assert max(gaps) < 0.5, max(gaps)  # 10 fps: no pause around the swap
        counts = loop.stats['gate'].snapshot()['counts']
        assert counts.get('failed', 0) == 0
        assert said == ['now deciding with version 2 (was 1)']
    finally:
        server.stop()


def test_a_version_that_does_not_load_keeps_the_old_one_until_its_files_change(model_dir):
    said = []
    backend = EdgeBackend(model_dir, poll_seconds=0, announce=said.append)
    streams.scripted_edge_model(model_dir, 2, broken=True)
    assert not backend.refresh() and not backend.refresh()  # the newest version, broken: tried once
    assert backend.info.version == 1
    assert len(said) == 1 and said[0].startswith('version 2 does not load (') and 'sha256' in said[0] \
        and said[0].endswith('keeping version 1')
    folder = os.path.join(model_dir, '2')
    good = os.path.join(model_dir, 'good')
    streams.scripted_edge_model(good, 2)
    os.replace(os.path.join(good, '2', 'model.onnx'), os.path.join(folder, 'model.onnx'))  # repaired in place
    assert backend.refresh() and backend.info.version == 2
    backend.close()


def test_a_missing_half_written_or_bad_labels_file_keeps_the_current_model_said_once(model_dir):
    streams.scripted_edge_model(model_dir, 2)
    streams.scripted_edge_model(model_dir, 3)
    streams.write_labels(model_dir, stable=2)
    said = []
    backend = EdgeBackend(model_dir, poll_seconds=0, announce=said.append)
    assert backend.info.version == 2
    labels = os.path.join(model_dir, 'labels.json')
    problems = [('{"stable": "3"', 'not JSON'), ('["3"]', 'expected an object'), ('{"canary": "3"}', "no 'stable' label"),
                ('{"stable": "9"}', 'version 9, which is not in'), ('{"stable": "three"}', 'not a version number')]
    for text, problem in problems:
        with open(labels, 'w') as f:
            f.write(text)
        for _ in range(3):
            assert not backend.refresh() and backend.info.version == 2
        assert problem in said[-1] and said[-1].endswith('keeping version 2'), said
    assert len(said) == len(problems)  # each said once
    os.remove(labels)  # no labels.json: the newest version
    assert backend.refresh() and backend.info.version == 3
    streams.write_labels(model_dir, stable=2)  # a rollback is a label move too
    assert backend.refresh() and backend.info.version == 2


def test_a_bad_labels_file_at_start_starts_with_the_newest_version(model_dir):
    streams.scripted_edge_model(model_dir, 2)
    with open(os.path.join(model_dir, 'labels.json'), 'w') as f:
        f.write('{"stab')
    said = []
    backend = EdgeBackend(model_dir, poll_seconds=0, announce=said.append)
    assert backend.info.version == 2 and 'starting with the newest version, 2' in said[0]


def test_it_follows_the_labels_file_petpark_promote_writes(model_dir):
    """The contract with `petpark promote`: serving/promote.py's write_edge_labels is what the loop reads."""
    from petpark.serving import promote
    backend = EdgeBackend(model_dir, poll_seconds=0)
    streams.scripted_edge_model(model_dir, 2)
    assert promote.write_edge_labels(model_dir, {'stable': 1, 'canary': 2}) == {'stable': '1', 'canary': '2'}
    assert not backend.refresh() and backend.info.version == 1  # stable stays 1 although 2 is newer
    promote.write_edge_labels(model_dir, {'stable': 2, 'canary': 7})  # 7 has no edge export: left out
    assert backend.refresh() and backend.info.version == 2
    backend.close()
