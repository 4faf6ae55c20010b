"""`petpark promote`'s serving side: move a version label (stable, canary) in models.config, safely.

TF Serving accepts a label only on a version that is already AVAILABLE, so a release is two
steps: a version that is not yet among the served versions is first added to the model's
`specific` version policy; once the server reports it AVAILABLE, the same command moves
the label. Moving `stable` keeps the version it left served (unlabelled, loaded and ready), so a
rollback to it is one step; the other unlabelled versions retire then. Moving any other label
retires only the version that label left, when no label names it any more. Every write is atomic
(a temporary file renamed over the old one), so a server polling the file never reads half, and
the read-modify-write holds an exclusive lock on `<config>.lock`, so promotes at once each keep
their label. The edge boxes' `<edge model dir>/labels.json` ({"<label>": "<version>"}) is written
the same way (whole, then renamed) for the labels whose version has an edge export.

Whether a label may move (an approval, a canary verdict) is the release rules' business
(pipeline/release/rollout.py); this module knows only the files.
"""
import contextlib
import dataclasses
import fcntl
import json
import os
import time
from typing import Dict, Iterator, Optional

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from petpark.serving import config_protos, files
from petpark.serving.layout import versions_on_disk

LOCK_SECONDS = 30.0
STANDBY_LABEL = 'stable'  # the version this label leaves stays served: the rollback target
EDGE_LABELS_FILE = 'labels.json'
EDGE_METADATA_FILE = 'metadata.json'  # an edge version is complete when it has this (serving/edge_runtime.py)


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


def check_request(model_name: str, model_dir: str, label: str, version: int) -> None:
    """ValueError when the label is no word or the version is not complete in `model_dir`."""
    if not label or not label.replace('_', '').replace('-', '').isalnum():
        raise ValueError(f'Label must be a word such as stable or canary, got {label!r}')
    available = sorted(versions_on_disk(model_dir))
    if version not in available:
        raise ValueError(f'Version {version} of model {model_name} does not exist in {model_dir} '
                         f'(complete versions: {available or "none"})')


def labels_of(config: model_server_config_pb2.ModelServerConfig, model_name: str) -> Dict[str, int]:
    """{label: version} of `model_name` in the config."""
    for model in config.model_config_list.config:
        if model.name == model_name:
            return dict(model.version_labels)
    return {}


def served_of(config: model_server_config_pb2.ModelServerConfig, model_name: str) -> list:
    """The versions of `model_name`'s `specific` policy (empty for another policy or no entry)."""
    for model in config.model_config_list.config:
        if model.name == model_name and model.model_version_policy.WhichOneof('policy_choice') == 'specific':
            return sorted(model.model_version_policy.specific.versions)
    return []


@dataclasses.dataclass
class Change:
    """What a promote would do: the new config, 'serve' (added to the served versions) or 'label'
    (the label moved, or already there), the version the label named before, and one sentence."""
    config: model_server_config_pb2.ModelServerConfig
    action: str
    previous: Optional[int]
    message: str


def plan(config: model_server_config_pb2.ModelServerConfig, model_name: str, model_dir: str, label: str,
         version: int, base_path: str = '') -> Change:
    """The change to `config` (a copy; the argument is left alone) that moves `label` to `version`."""
    config = type(config).FromString(config.SerializeToString())
    models = {m.name: m for m in config.model_config_list.config}
    model = models.get(model_name)
    if model is None:
        model = config.model_config_list.config.add(
            name=model_name, base_path=os.path.abspath(base_path or model_dir), model_platform='tensorflow')
    policy = model.model_version_policy
    served = set(policy.specific.versions) if policy.WhichOneof('policy_choice') == 'specific' else set()
    served |= set(model.version_labels.values())
    previous = model.version_labels.get(label)
    if version not in served:
        policy.specific.versions[:] = sorted(served | {version})
        return Change(config, 'serve', previous,
                      f'Version {version} added to the served versions of {model_name}; once it is AVAILABLE, '
                      f'run the same command again to point {label!r} at it.')
    model.version_labels[label] = version
    labelled = set(model.version_labels.values())
    if label == STANDBY_LABEL:
        keep = labelled | ({previous} if previous is not None else set())
        if previous == version:  # no move: the standby (any unlabelled served version) stays
            keep = served
    else:
        keep = served - ({previous} - labelled if previous is not None else set())
        keep |= labelled
    policy.specific.versions[:] = sorted(keep)
    moved = f'from {previous} ' if previous is not None and previous != version else ''
    standby = sorted(keep - labelled)
    kept = f' (version {standby[0]} stays served for a rollback)' if label == STANDBY_LABEL and standby and \
        previous is not None and previous != version else ''
    return Change(config, 'label', previous, f'Label {label!r} of {model_name} moved {moved}to version {version}; '
                                             f'serving versions {sorted(keep)}{kept}.')


def promote(config_path: str, model_name: str, model_dir: str, label: str, version: int,
            base_path: str = '') -> str:
    """Updates `config_path`; returns what it did, in one sentence (no release rules: see
    pipeline/release/rollout.py for the command's).

    model_dir: where this machine sees the model's versions (checked for `version`);
    base_path: the path the server sees (default: model_dir), used for a new model entry.
    """
    check_request(model_name, model_dir, label, version)
    with locked(config_path):
        change = plan(read_config(config_path), model_name, model_dir, label, version, base_path)
        write_config_atomically(change.config, config_path)
        return change.message


def edge_version_exists(edge_model_dir: str, version) -> bool:
    return os.path.isfile(os.path.join(edge_model_dir, str(version), EDGE_METADATA_FILE))


def write_edge_labels(edge_model_dir: str, labels: Dict[str, int]) -> Dict[str, str]:
    """Writes `<edge_model_dir>/labels.json` whole, then renamed: the labels whose version has an edge
    export (a camera box follows its `stable`); returns what it wrote."""
    document = {label: str(version) for label, version in sorted(labels.items())
                if edge_version_exists(edge_model_dir, version)}
    files.write_text_atomically(os.path.join(edge_model_dir, EDGE_LABELS_FILE), json.dumps(document, indent=1) + '\n')
    return document
