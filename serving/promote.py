"""`petpark promote`: move a version label (stable, canary) in models.config, safely.

TF Serving accepts a label only on a version that is already AVAILABLE, so a release is two
steps: a version that is not yet among the served versions is first added to the model's
`specific` version policy; once the server reports it AVAILABLE, the same command moves
the label. Rollback is promoting the previous version again. Every write is atomic (a
temporary file renamed over the old one), so a server polling the file never reads half, and the
read-modify-write holds an exclusive lock on `<config>.lock`, so promotes at once each keep their label.
"""
import contextlib
import fcntl
import os
import time
from typing import Iterator

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from petpark.serving import config_protos, files
from petpark.serving.layout import versions_on_disk

LOCK_SECONDS = 30.0


class ConfigLocked(ValueError):
    """Another promote held the config's lock for longer than LOCK_SECONDS."""


def read_config(path: str) -> model_server_config_pb2.ModelServerConfig:
    """The file's ModelServerConfig; an empty one when the file does not exist yet."""
    if not os.path.exists(path):
        return model_server_config_pb2.ModelServerConfig()
    return config_protos.parse_text(path, model_server_config_pb2.ModelServerConfig)


def write_config_atomically(config: model_server_config_pb2.ModelServerConfig, path: str) -> None:
    files.write_text_atomically(path, text_format.MessageToString(config))


@contextlib.contextmanager
def locked(config_path: str) -> Iterator[None]:
    """Holds an exclusive lock on `<config_path>.lock` (kept, never removed: removing it would let two
    processes lock different files); ConfigLocked after LOCK_SECONDS of waiting."""
    lock_path = config_path + '.lock'
    os.makedirs(os.path.dirname(os.path.abspath(lock_path)), exist_ok=True)
    with open(lock_path, 'a') as lock:
        deadline = time.monotonic() + LOCK_SECONDS
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ConfigLocked(f'{config_path}: another `petpark promote` has held {lock_path} for over '
                                       f'{LOCK_SECONDS:g} s; nothing changed, try again') from None
                time.sleep(0.02)
        yield  # closing the file releases the lock


def promote(config_path: str, model_name: str, model_dir: str, label: str, version: int,
            base_path: str = '') -> str:
    """Updates `config_path`; returns what it did, in one sentence.

    model_dir: where this machine sees the model's versions (checked for `version`);
    base_path: the path the server sees (default: model_dir), used for a new model entry.
    """
    if not label or not label.replace('_', '').replace('-', '').isalnum():
        raise ValueError(f'Label must be a word such as stable or canary, got {label!r}')
    available = sorted(versions_on_disk(model_dir))
    if version not in available:
        raise ValueError(f'Version {version} of model {model_name} does not exist in {model_dir} '
                         f'(complete versions: {available or "none"})')
    with locked(config_path):
        return _promote_locked(config_path, model_name, model_dir, label, version, base_path)


def _promote_locked(config_path: str, model_name: str, model_dir: str, label: str, version: int, base_path: str) -> str:
    config = read_config(config_path)
    models = {m.name: m for m in config.model_config_list.config}
    model = models.get(model_name)
    if model is None:
        model = config.model_config_list.config.add(
            name=model_name, base_path=os.path.abspath(base_path or model_dir), model_platform='tensorflow')
    policy = model.model_version_policy
    served = set(policy.specific.versions) if policy.WhichOneof('policy_choice') == 'specific' else set()
    served |= set(model.version_labels.values())
    if version not in served:
        policy.specific.versions[:] = sorted(served | {version})
        write_config_atomically(config, config_path)
        return (f'Version {version} added to the served versions of {model_name}; once it is AVAILABLE, '
                f'run the same command again to point {label!r} at it.')
    previous = model.version_labels.get(label)
    model.version_labels[label] = version
    policy.specific.versions[:] = sorted(set(model.version_labels.values()))  # unlabelled versions retire
    write_config_atomically(config, config_path)
    moved = f'from {previous} ' if previous is not None and previous != version else ''
    serving = list(policy.specific.versions)
    return f'Label {label!r} of {model_name} moved {moved}to version {version}; serving versions {serving}.'
