"""ServingPusher executor: pushes like TFX's Pusher, but never an identical model twice."""
import os
import time

import pytest
from tfx.proto import pusher_pb2
from tfx.types import standard_artifacts
from tfx.utils import proto_utils

from petpark.components.serving_pusher import executor


def fake_saved_model(path, fingerprint):
    os.makedirs(os.path.join(path, 'variables'), exist_ok=True)
    for name, data in (('saved_model.pb', b'graph'), ('fingerprint.pb', fingerprint),
                       ('variables/variables.index', b'index')):
        with open(os.path.join(path, name), 'wb') as f:
            f.write(data)


def fake_model(uri, fingerprint):
    """A Model artifact's folder: the Trainer's export lives under Format-Serving/."""
    fake_saved_model(os.path.join(uri, 'Format-Serving'), fingerprint)


def push(tmp_path, model_dir, blessed=True, run=0, infra_blessing=None):
    """Runs the executor as the pipeline does: the Evaluator's blessing, and the
    ServingValidator's InfraBlessing when given."""
    model = standard_artifacts.Model()
    model.uri = str(model_dir)
    blessing = standard_artifacts.ModelBlessing()
    blessing.uri = str(tmp_path / f'blessing{run}')
    blessing.set_int_custom_property('blessed', int(blessed))
    pushed = standard_artifacts.PushedModel()
    pushed.uri = str(tmp_path / f'pushed{run}')
    destination = pusher_pb2.PushDestination(
        filesystem=pusher_pb2.PushDestination.Filesystem(base_directory=str(tmp_path / 'serving')))
    inputs = {'model': [model], 'model_blessing': [blessing]}
    if infra_blessing is not None:
        inputs['infra_blessing'] = [infra_blessing]
    executor.Executor().Do(inputs, {'pushed_model': [pushed]},
                           {'push_destination': proto_utils.proto_to_json(destination)})
    return pushed


def versions(tmp_path):
    return sorted(os.listdir(tmp_path / 'serving')) if (tmp_path / 'serving').exists() else []


def test_identical_model_is_not_pushed_twice_but_a_changed_one_is(tmp_path):
    fake_model(tmp_path / 'model_a', b'fingerprint-a')
    first = push(tmp_path, tmp_path / 'model_a', run=1)
    assert first.get_int_custom_property('pushed') == 1 and len(versions(tmp_path)) == 1
    time.sleep(1.1)  # versions are UNIX timestamps
    again = push(tmp_path, tmp_path / 'model_a', run=2)
    assert versions(tmp_path) == [first.get_string_custom_property('pushed_version')]
    assert again.get_int_custom_property('pushed') == 1
    assert again.get_string_custom_property('pushed_destination') == first.get_string_custom_property(
        'pushed_destination')

    fake_model(tmp_path / 'model_b', b'fingerprint-b')
    push(tmp_path, tmp_path / 'model_b', run=3)
    assert len(versions(tmp_path)) == 2
    newest = executor.latest_version_dir(str(tmp_path / 'serving'))
    assert open(os.path.join(newest, 'fingerprint.pb'), 'rb').read() == b'fingerprint-b'


def test_unblessed_model_is_not_pushed(tmp_path):
    fake_model(tmp_path / 'model', b'f')
    pushed = push(tmp_path, tmp_path / 'model', blessed=False)
    assert pushed.get_int_custom_property('pushed') == 0 and versions(tmp_path) == []


def test_incomplete_version_folders_are_ignored(tmp_path):
    (tmp_path / 'serving' / '99999999999').mkdir(parents=True)  # being written: no saved_model.pb
    (tmp_path / 'serving' / 'not-a-version').mkdir()
    fake_saved_model(tmp_path / 'serving' / '5', b'f')
    assert executor.latest_version_dir(str(tmp_path / 'serving')).endswith('/5')


def test_a_killed_push_leaves_no_version_a_reader_would_load_and_the_next_push_cleans_up(tmp_path, monkeypatch):
    from tfx.dsl.io import fileio
    fake_model(tmp_path / 'model', b'fingerprint-k')
    copied = []
    real_copy = fileio.copy

    def dies_midway(source, destination, overwrite=False):
        if len(copied) == 2:
            raise KeyboardInterrupt('killed')  # as a kill during the copy would stop it
        copied.append(destination)
        real_copy(source, destination, overwrite)

    monkeypatch.setattr(fileio, 'copy', dies_midway)
    with pytest.raises(KeyboardInterrupt):
        push(tmp_path, tmp_path / 'model', run=1)
    monkeypatch.setattr(fileio, 'copy', real_copy)
    names = os.listdir(tmp_path / 'serving')
    assert not [n for n in names if n.isdigit()] and len(names) == 1 and names[0].endswith('.staging')
    leftover = tmp_path / 'serving' / '1700000000'  # what the old in-place copy left when killed
    leftover.mkdir()
    (leftover / 'fingerprint.pb').write_bytes(b'f')
    (leftover / 'keras_metadata.pb').write_bytes(b'')
    assert executor.latest_version_dir(str(tmp_path / 'serving')) is None

    pushed = push(tmp_path, tmp_path / 'model', run=2)
    version = pushed.get_string_custom_property('pushed_version')
    assert os.listdir(tmp_path / 'serving') == [version]
    assert sorted(os.listdir(tmp_path / 'serving' / version)) == ['fingerprint.pb', 'saved_model.pb', 'variables']


def test_versions_published_in_the_same_second_get_distinct_numbers(tmp_path, monkeypatch):
    monkeypatch.setattr(executor.time, 'time', lambda: 1800000000.5)
    fake_model(tmp_path / 'a', b'fingerprint-a')
    fake_model(tmp_path / 'b', b'fingerprint-b')
    first = push(tmp_path, tmp_path / 'a', run=1).get_string_custom_property('pushed_version')
    second = push(tmp_path, tmp_path / 'b', run=2).get_string_custom_property('pushed_version')
    assert (first, second) == ('1800000000', '1800000001')
