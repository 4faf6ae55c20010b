"""ServingPusher executor: TFX's Pusher for filesystem destinations, publishing each version
atomically and never pushing an unchanged model twice."""
import os
import re
import time
from typing import Any, Dict, List, Optional

from absl import logging
from tfx.components.pusher import executor as pusher_executor
from tfx.dsl.io import fileio
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import io_utils, proto_utils

FINGERPRINT_FILE = 'fingerprint.pb'
SAVED_MODEL_FILE = 'saved_model.pb'
STAGING_SUFFIX = '.staging'


def latest_version_dir(base_directory: str) -> Optional[str]:
    """The highest numeric version folder holding a saved_model.pb, TF Serving's way."""
    if not fileio.isdir(base_directory):
        return None
    versions = [name.rstrip('/') for name in fileio.listdir(base_directory) if name.rstrip('/').isdigit()]
    complete = [v for v in versions if fileio.exists(os.path.join(base_directory, v, SAVED_MODEL_FILE))]
    return os.path.join(base_directory, max(complete, key=int)) if complete else None


def same_model(model_dir: str, served_dir: str) -> bool:
    """Whether two SavedModels have identical fingerprints (graph, signatures, checkpoint)."""
    paths = [os.path.join(d, FINGERPRINT_FILE) for d in (model_dir, served_dir)]
    if not all(fileio.exists(p) for p in paths):
        return False
    return io_utils.read_bytes_file(paths[0]) == io_utils.read_bytes_file(paths[1])


def remove_leftovers(base_directory: str, marker: str = SAVED_MODEL_FILE) -> List[str]:
    """Removes what killed pushes left: staging folders, and numeric folders without their
    `marker` file (readers ignore both; they only take space and confuse people)."""
    removed = []
    if not fileio.isdir(base_directory):
        return removed
    for name in fileio.listdir(base_directory):
        name = name.rstrip('/')
        path = os.path.join(base_directory, name)
        staging = name.startswith('.') and name.endswith(STAGING_SUFFIX)
        incomplete = name.isdigit() and not fileio.exists(os.path.join(path, marker))
        if (staging or incomplete) and fileio.isdir(path):
            fileio.rmtree(path)
            removed.append(name)
    return removed


def publish_atomically(source_dir: str, final_dir: str, marker: str) -> None:
    """Copies `source_dir` to `final_dir` so that no reader sees a half-written folder.

    Locally the copy goes to a hidden staging folder beside it (`.<name>.staging`, a name TF
    Serving and the edge runtime never load), which is then renamed into place. On object
    stores, where renaming a folder is a copy, the `marker` file that makes the folder count
    (saved_model.pb, metadata.json) is copied last, as TFX's Pusher does.
    """
    if '://' in final_dir:
        io_utils.copy_dir(source_dir, final_dir, deny_regex_patterns=[re.escape(marker)])
        io_utils.copy_file(os.path.join(source_dir, marker), os.path.join(final_dir, marker))
        return
    parent, name = os.path.split(final_dir.rstrip('/'))
    staging = os.path.join(parent, f'.{name}{STAGING_SUFFIX}')
    io_utils.copy_dir(source_dir, staging)
    os.rename(staging, final_dir)


def publish(model_dir: str, base_directory: str) -> str:
    """Publishes the SavedModel as a new `<base>/<unix time>` version; returns the version."""
    version = int(time.time())
    while fileio.exists(os.path.join(base_directory, str(version))):
        version += 1
    publish_atomically(model_dir, os.path.join(base_directory, str(version)), SAVED_MODEL_FILE)
    return str(version)


class Executor(pusher_executor.Executor):
    """Pushes blessed models like TFX's Pusher, to a filesystem destination, atomically. A model
    identical to the newest served version (e.g. re-blessed against itself as baseline) is
    recorded as pushed to that version instead of being copied again under a new one."""

    def Do(self, input_dict: Dict[str, List[Any]], output_dict: Dict[str, List[Any]],
           exec_properties: Dict[str, Any]) -> None:
        destination = pusher_pb2.PushDestination()
        proto_utils.json_to_proto(exec_properties[standard_component_specs.PUSH_DESTINATION_KEY], destination)
        if not destination.HasField('filesystem'):
            super().Do(input_dict, output_dict, exec_properties)  # TFX's own error for other kinds
            return
        model_push = artifact_utils.get_single_instance(output_dict[standard_component_specs.PUSHED_MODEL_KEY])
        if not self.CheckBlessing(input_dict):
            self._MarkNotPushed(model_push)
            return
        base_directory = destination.filesystem.base_directory
        removed = remove_leftovers(base_directory)
        if removed:
            logging.warning('Removed what interrupted pushes left in %s: %s', base_directory, removed)
        model_path = self.GetModelPath(input_dict)
        served = latest_version_dir(base_directory)
        if served is not None and same_model(model_path, served):
            version = os.path.basename(served)
            logging.info('Model is already serving as %s; not pushed again.', served)
        else:
            version = publish(model_path, base_directory)
            logging.info('Model published to %s.', os.path.join(base_directory, version))
        io_utils.copy_dir(model_path, model_push.uri)
        self._MarkPushed(model_push, pushed_destination=os.path.join(base_directory, version),
                         pushed_version=version)
