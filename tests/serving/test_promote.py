"""petpark promote: two-step label moves, refusals, atomic writes, locked read-modify-writes, a config
the store accepts."""
import fcntl
import json
import os
import subprocess
import sys

import pytest

from petpark.pipeline import cli
from petpark.serving import promote
from petpark.serving.model_store import ModelStore, Servable


def add_version(model_dir, version):
    os.makedirs(os.path.join(model_dir, str(version)), exist_ok=True)
    open(os.path.join(model_dir, str(version), 'saved_model.pb'), 'w').close()


def test_release_canary_then_promote_and_roll_back(tmp_path):
    model_dir, config_path = str(tmp_path / 'petpark'), str(tmp_path / 'models.config')
    for version in (1, 2):
        add_version(model_dir, version)
    assert 'added to the served versions' in promote.promote(config_path, 'petpark', model_dir, 'stable', 1)
    assert "'stable' of petpark moved to version 1" in promote.promote(config_path, 'petpark', model_dir, 'stable', 1)
    promote.promote(config_path, 'petpark', model_dir, 'canary', 2)  # step 1: serve version 2 too
    config = promote.read_config(config_path)
    assert list(config.model_config_list.config[0].model_version_policy.specific.versions) == [1, 2]
    assert 'canary' not in config.model_config_list.config[0].version_labels
    promote.promote(config_path, 'petpark', model_dir, 'canary', 2)  # step 2: label it
    message = promote.promote(config_path, 'petpark', model_dir, 'stable', 2)
    assert 'moved from 1 to version 2' in message
    model = promote.read_config(config_path).model_config_list.config[0]
    assert dict(model.version_labels) == {'stable': 2, 'canary': 2}
    assert list(model.model_version_policy.specific.versions) == [1, 2]  # version 1 stays served: the rollback target
    assert model.base_path == model_dir and model.model_platform == 'tensorflow'
    assert "moved from 2 to version 1" in promote.promote(config_path, 'petpark', model_dir, 'stable', 1)  # one step
    add_version(model_dir, 3)
    promote.promote(config_path, 'petpark', model_dir, 'canary', 3)
    promote.promote(config_path, 'petpark', model_dir, 'canary', 3)  # canary leaves 2, which stable left: retires
    model = promote.read_config(config_path).model_config_list.config[0]
    assert dict(model.version_labels) == {'stable': 1, 'canary': 3}
    assert list(model.model_version_policy.specific.versions) == [1, 3]
    promote.promote(config_path, 'petpark', model_dir, 'stable', 3)  # stable 1 -> 3: 1 stays as the standby
    model = promote.read_config(config_path).model_config_list.config[0]
    assert list(model.model_version_policy.specific.versions) == [1, 3]


def test_edge_labels_name_only_versions_with_an_edge_export_and_are_replaced_whole(tmp_path):
    edge = str(tmp_path / 'edge' / 'petpark')
    for version in (1, 2):
        os.makedirs(os.path.join(edge, str(version)))
    open(os.path.join(edge, '1', 'metadata.json'), 'w').close()  # 2 is not complete (no metadata.json)
    assert promote.write_edge_labels(edge, {'stable': 1, 'canary': 2}) == {'stable': '1'}
    with open(os.path.join(edge, 'labels.json')) as f:
        assert json.load(f) == {'stable': '1'}
    assert sorted(os.listdir(edge)) == ['1', '2', 'labels.json']


def test_refuses_missing_or_incomplete_versions_and_bad_labels(tmp_path):
    model_dir, config_path = str(tmp_path / 'petpark'), str(tmp_path / 'models.config')
    add_version(model_dir, 1)
    os.makedirs(os.path.join(model_dir, '3'))  # no saved_model.pb yet
    for version in (2, 3):
        with pytest.raises(ValueError, match=f'Version {version} of model petpark does not exist.*\\[1\\]'):
            promote.promote(config_path, 'petpark', model_dir, 'stable', version)
    with pytest.raises(ValueError, match='Label must be a word'):
        promote.promote(config_path, 'petpark', model_dir, 'st able', 1)
    assert not os.path.exists(config_path)


def test_unparsable_config_is_reported_and_left_alone(tmp_path):
    model_dir, config_path = str(tmp_path / 'petpark'), str(tmp_path / 'models.config')
    add_version(model_dir, 1)
    with open(config_path, 'w') as f:
        f.write('model_config_list { config { name: ')
    with pytest.raises(ValueError, match='Error parsing text-format tensorflow.serving.ModelServerConfig'):
        promote.promote(config_path, 'petpark', model_dir, 'stable', 1)
    assert open(config_path).read() == 'model_config_list { config { name: '
    assert [n for n in os.listdir(tmp_path) if n.startswith('.models.config.')] == []


def test_written_config_is_served_by_the_model_store(tmp_path):
    model_dir, config_path = str(tmp_path / 'petpark'), str(tmp_path / 'models.config')
    add_version(model_dir, 1)
    add_version(model_dir, 2)
    for _ in range(2):
        promote.promote(config_path, 'petpark', model_dir, 'stable', 1)
    store = ModelStore(promote.read_config(config_path), lambda name, path, version: Servable())
    store.start(poll_seconds=0)
    assert [r.version for r in store.status('petpark')] == [1]  # the policy pins the labelled version
    assert store.resolve_label('petpark', 'stable') == 1


def test_cli_uses_home_defaults(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv('PETPARK_HOME', str(tmp_path))
    monkeypatch.delenv('PETPARK_RELEASE_REQUIRE_APPROVAL', raising=False)
    add_version(str(tmp_path / 'serving' / 'petpark'), 7)
    assert cli.main(['promote', '--label', 'canary', '--version', '7']) == 0
    assert 'added to the served versions' in capsys.readouterr().out
    assert os.path.isfile(tmp_path / 'serving' / 'models.config')
    assert cli.main(['promote', '--label', 'stable', '--version', '8']) == 2
    assert 'Version 8 of model petpark does not exist' in capsys.readouterr().err
    assert cli.main(['promote', '--label', 'stable', '--version', '7']) == 2  # the release rules: no approval
    assert 'no approval of version 7' in capsys.readouterr().err


# One `petpark promote` in a process of its own: says it is ready, waits for the go file, promotes.
PROMOTE_WHEN_TOLD = """
import os, sys, time
from petpark.serving import promote
go, config_path, model_dir, label = sys.argv[1:]
print('ready', flush=True)
while not os.path.exists(go):
    time.sleep(0.001)
print(promote.promote(config_path, 'petpark', model_dir, label, 1))
"""


def test_concurrent_promotes_of_different_labels_keep_every_label(tmp_path):
    """Eight processes move eight labels at the same moment, in each of four rounds: every label is
    there afterwards (without the lock, rounds lose labels while every process exits 0)."""
    model_dir = str(tmp_path / 'petpark')
    add_version(model_dir, 1)
    labels = [f'label{i}' for i in range(8)]
    for round_number in range(4):
        config_path = str(tmp_path / f'round-{round_number}' / 'models.config')
        promote.promote(config_path, 'petpark', model_dir, 'stable', 1)  # serves version 1: labels move at once
        go = str(tmp_path / f'go-{round_number}')
        processes = [subprocess.Popen([sys.executable, '-c', PROMOTE_WHEN_TOLD, go, config_path, model_dir, label],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for label in labels]
        for process in processes:
            assert process.stdout.readline() == 'ready\n', process.communicate()[1]
        open(go, 'w').close()
        outputs = [process.communicate(timeout=120) for process in processes]
        assert [process.returncode for process in processes] == [0] * len(labels), outputs
        model = promote.read_config(config_path).model_config_list.config[0]
        assert sorted(model.version_labels) == labels, f'round {round_number}: {dict(model.version_labels)}'
        assert list(model.model_version_policy.specific.versions) == [1]


def test_a_lock_held_too_long_is_a_clear_error_and_changes_nothing(tmp_path, monkeypatch, capsys):
    model_dir, config_path = str(tmp_path / 'petpark'), str(tmp_path / 'models.config')
    add_version(model_dir, 1)
    promote.promote(config_path, 'petpark', model_dir, 'stable', 1)
    before = open(config_path).read()
    monkeypatch.setattr(promote, 'LOCK_SECONDS', 0.3)
    with open(config_path + '.lock', 'a') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another promote, stuck
        with pytest.raises(promote.ConfigLocked, match=f'{config_path}: another `petpark promote` has held '
                                                       f'{config_path}.lock for over 0.3 s; nothing changed'):
            promote.promote(config_path, 'petpark', model_dir, 'stable', 1)
        monkeypatch.setenv('PETPARK_HOME', str(tmp_path))
        assert cli.main(['promote', '--label', 'canary', '--version', '1', '--config', config_path,
                         '--model-dir', model_dir]) == 2
        err = capsys.readouterr().err
        assert err.startswith('petpark: error: ') and err.count('\n') == 1 and 'held' in err
    assert open(config_path).read() == before
    assert 'stable' in promote.promote(config_path, 'petpark', model_dir, 'stable', 1)  # released: it works
