"""ModelStore: version policies, availability-preserving swaps, failed loads, in-flight unloads."""
import os
import shutil
import threading

import grpc
import pytest
from tensorflow_serving.config import model_server_config_pb2

from petpark.serving import errors
from petpark.serving.model_store import ModelStore, Servable, State


class FakeServable(Servable):
    def __init__(self, version):
        super().__init__()
        self.version = version


def loader(name, path, version):
    if os.path.exists(os.path.join(path, 'broken')):
        raise ValueError(f'cannot load {path}')
    return FakeServable(version)


def add_version(base, version, broken=False):
    folder = os.path.join(base, str(version))
    os.makedirs(folder, exist_ok=True)
    if broken:
        open(os.path.join(folder, 'broken'), 'w').close()
    open(os.path.join(folder, 'saved_model.pb'), 'w').close()


def make_store(base, policy=None, labels=None, name='m'):
    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add(name=name, base_path=str(base))
    if policy:
        model.model_version_policy.CopyFrom(policy)
    for label, version in (labels or {}).items():
        model.version_labels[label] = version
    store = ModelStore(config, loader)
    store.start(poll_seconds=0)
    return store


def states(store, name='m'):
    return {r.version: State.Name(r.state) for r in store.status(name)}


def test_latest_version_serves_and_incomplete_versions_are_ignored(tmp_path):
    add_version(tmp_path, 1)
    add_version(tmp_path, 2)
    os.makedirs(tmp_path / '3')  # still being written: no saved_model.pb
    os.makedirs(tmp_path / 'tmp-upload')
    store = make_store(tmp_path)
    assert states(store) == {2: 'AVAILABLE'}
    with store.acquire('m') as servable:
        assert servable.version == 2


def test_new_version_replaces_old_once_available(tmp_path):
    add_version(tmp_path, 1)
    store = make_store(tmp_path)
    add_version(tmp_path, 5)
    store.poll()
    assert states(store) == {5: 'AVAILABLE', 1: 'END'}


def test_failed_load_never_replaces_a_working_version(tmp_path):
    add_version(tmp_path, 1)
    store = make_store(tmp_path)
    add_version(tmp_path, 2, broken=True)
    store.poll()
    records = {r.version: r for r in store.status('m')}
    assert records[1].state == State.AVAILABLE
    assert records[2].state == State.END and 'cannot load' in records[2].error
    with store.acquire('m') as servable:
        assert servable.version == 1
    store.poll()  # unchanged on disk: not retried
    assert store.status('m', 2)[0].state == State.END


def test_policies_all_and_specific(tmp_path):
    for v in (1, 2, 3):
        add_version(tmp_path, v)
    policy = model_server_config_pb2.ModelConfig().model_version_policy
    policy.all.SetInParent()
    assert set(states(make_store(tmp_path, policy))) == {1, 2, 3}
    specific = model_server_config_pb2.ModelConfig().model_version_policy
    specific.specific.versions.append(2)
    store = make_store(tmp_path, specific)
    assert states(store) == {2: 'AVAILABLE'}
    latest = model_server_config_pb2.ModelConfig().model_version_policy
    latest.latest.num_versions = 2
    assert states(make_store(tmp_path, latest)) == {3: 'AVAILABLE', 2: 'AVAILABLE'}


def test_unload_waits_for_requests_in_flight(tmp_path):
    add_version(tmp_path, 1)
    store = make_store(tmp_path)
    add_version(tmp_path, 2)
    with store.acquire('m') as old:
        poller = threading.Thread(target=store.poll)
        poller.start()
        poller.join(timeout=0.5)
        assert poller.is_alive()  # waiting for this request
        assert store.status('m', 1)[0].state == State.UNLOADING
        with store.acquire('m') as new:  # new requests already go to the new version
            assert new.version == 2
        assert old.version == 1
    poller.join(timeout=5)
    assert states(store) == {2: 'AVAILABLE', 1: 'END'}


def test_lookup_errors_use_tf_serving_codes_and_messages(tmp_path):
    add_version(tmp_path, 1)
    store = make_store(tmp_path, labels={'stable': 1})
    with store.acquire('m', label='stable') as servable:
        assert servable.version == 1
    cases = [(lambda: store.acquire('x').__enter__(), grpc.StatusCode.NOT_FOUND, 'Servable not found for request: Latest(x)'),
             (lambda: store.acquire('m', 7).__enter__(), grpc.StatusCode.NOT_FOUND, 'Specific(m, 7)'),
             (lambda: store.acquire('m', label='canary').__enter__(), grpc.StatusCode.INVALID_ARGUMENT,
              'Unrecognized servable version label: canary'),
             (lambda: store.status('x'), grpc.StatusCode.NOT_FOUND, 'Could not find any versions of model x'),
             (lambda: store.status('m', 9), grpc.StatusCode.NOT_FOUND, 'Could not find version 9 of model m')]
    for call, code, message in cases:
        with pytest.raises(errors.ServingError) as error:
            call()
        assert error.value.code == code and message in error.value.message


def test_reload_config_replaces_models_and_rejects_bad_configs(tmp_path):
    add_version(tmp_path / 'a', 1)
    add_version(tmp_path / 'b', 4)
    store = make_store(tmp_path / 'a', name='a')
    config = model_server_config_pb2.ModelServerConfig()
    config.model_config_list.config.add(name='b', base_path=str(tmp_path / 'b'))
    store.reload_config(config)
    assert store.model_names() == ['b'] and states(store, 'b') == {4: 'AVAILABLE'}

    bad = model_server_config_pb2.ModelServerConfig()
    bad.model_config_list.config.add(name='b', base_path='relative/path')
    with pytest.raises(errors.ServingError, match='absolute path'):
        store.reload_config(bad)
    duplicate = model_server_config_pb2.ModelServerConfig()
    duplicate.model_config_list.config.add(name='b', base_path=str(tmp_path / 'b'))
    duplicate.model_config_list.config.add(name='b', base_path=str(tmp_path / 'b'))
    with pytest.raises(errors.ServingError, match='multiple times'):
        store.reload_config(duplicate)
    unavailable_label = model_server_config_pb2.ModelServerConfig()
    model = unavailable_label.model_config_list.config.add(name='b', base_path=str(tmp_path / 'b'))
    model.version_labels['canary'] = 99
    with pytest.raises(errors.ServingError) as error:
        store.reload_config(unavailable_label)
    assert error.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert states(store, 'b') == {4: 'AVAILABLE'}  # the old config still serves


def test_a_newest_version_that_fails_to_load_leaves_the_previous_one_serving_after_a_restart(tmp_path):
    """TF Serving would serve nothing here (its latest-1 policy aspires to the broken version only)."""
    add_version(tmp_path, 1)
    add_version(tmp_path, 2)
    add_version(tmp_path, 3, broken=True)
    store = make_store(tmp_path)  # a fresh start: nothing loaded yet
    records = {r.version: r for r in store.status('m')}
    assert records[3].state == State.END and 'cannot load' in records[3].error
    assert records[2].state == State.AVAILABLE and 1 not in records
    with store.acquire('m') as servable:
        assert servable.version == 2
    os.remove(tmp_path / '3' / 'broken')  # the folder is fixed: its saved_model.pb is new
    os.utime(tmp_path / '3' / 'saved_model.pb', (1e10, 1e10))
    store.poll()
    assert states(store) == {3: 'AVAILABLE', 2: 'END'}


def test_every_broken_version_is_skipped_down_to_one_that_loads(tmp_path):
    policy = model_server_config_pb2.ModelConfig().model_version_policy
    policy.latest.num_versions = 2
    for version, broken in ((1, False), (2, False), (3, True), (4, False), (5, True)):
        add_version(tmp_path, version, broken)
    store = make_store(tmp_path, policy)
    assert {v: s for v, s in states(store).items()} == {5: 'END', 4: 'AVAILABLE', 3: 'END', 2: 'AVAILABLE'}


def test_the_specific_policy_gets_no_substitute(tmp_path):
    add_version(tmp_path, 1)
    add_version(tmp_path, 2, broken=True)
    policy = model_server_config_pb2.ModelConfig().model_version_policy
    policy.specific.versions.append(2)
    store = make_store(tmp_path, policy)
    assert states(store) == {2: 'END'}


def test_a_truncated_saved_model_pb_is_reported_and_the_previous_version_serves(tmp_path):
    from petpark.serving import tf_servable
    from tests.serving.model_fixtures import build_linear_model
    build_linear_model(str(tmp_path / '1'))
    shutil.copytree(tmp_path / '1', tmp_path / '2')
    with open(tmp_path / '2' / 'saved_model.pb', 'r+b') as f:
        f.truncate(100)  # as a killed copy leaves it
    config = model_server_config_pb2.ModelServerConfig()
    config.model_config_list.config.add(name='m', base_path=str(tmp_path))
    store = ModelStore(config, tf_servable.load)
    store.start(poll_seconds=0)
    records = {r.version: r for r in store.status('m')}
    assert records[2].state == State.END and records[2].error
    with store.acquire('m') as servable:
        assert servable.version == 1
        assert servable.run(None, {'x': [2.0]})['y'].tolist() == [3.0]


def test_deleting_the_serving_version_rolls_back_to_the_previous_one(tmp_path):
    add_version(tmp_path, 1)
    store = make_store(tmp_path)
    add_version(tmp_path, 2)
    store.poll()
    assert states(store) == {2: 'AVAILABLE', 1: 'END'}
    shutil.rmtree(tmp_path / '2')
    store.poll()
    assert states(store) == {2: 'END', 1: 'AVAILABLE'}
    with store.acquire('m') as servable:
        assert servable.version == 1
    add_version(tmp_path, 2)  # pushed again
    store.poll()
    assert states(store) == {2: 'AVAILABLE', 1: 'END'}


def test_a_rollback_falls_back_further_when_the_previous_version_does_not_load(tmp_path):
    add_version(tmp_path, 1)
    add_version(tmp_path, 2)
    store = make_store(tmp_path)
    add_version(tmp_path, 3)
    store.poll()
    assert states(store) == {3: 'AVAILABLE', 2: 'END'}
    open(tmp_path / '2' / 'broken', 'w').close()  # version 2 no longer loads
    shutil.rmtree(tmp_path / '3')
    store.poll()
    records = {r.version: r for r in store.status('m')}
    assert {v: State.Name(r.state) for v, r in records.items()} == {3: 'END', 2: 'END', 1: 'AVAILABLE'}
    assert 'cannot load' in records[2].error and not records[3].error


def test_the_deleted_version_serves_on_when_no_other_loads(tmp_path):
    """As TF Serving's availability-preserving policy: an aspired version that fails does not unload the one serving."""
    add_version(tmp_path, 1, broken=True)
    store = make_store(tmp_path)
    add_version(tmp_path, 2)
    store.poll()
    shutil.rmtree(tmp_path / '2')
    store.poll()
    assert states(store) == {2: 'AVAILABLE', 1: 'END'}


def test_with_no_version_folder_left_every_version_unloads_but_a_missing_base_path_changes_nothing(tmp_path):
    base = tmp_path / 'm'
    add_version(base, 1)
    store = make_store(base)
    os.rename(base, tmp_path / 'elsewhere')  # gone, or not mounted for now: as TF Serving, keep serving
    store.poll()
    assert states(store) == {1: 'AVAILABLE'}
    os.rename(tmp_path / 'elsewhere', base)
    shutil.rmtree(base / '1')
    store.poll()
    assert states(store) == {1: 'END'}
    with pytest.raises(errors.ServingError) as error:
        store.acquire('m').__enter__()
    assert error.value.code == grpc.StatusCode.NOT_FOUND
