"""ServingPusher executor: TFX's Pusher for filesystem destinations, publishing each version
atomically and never pushing an unchanged model twice."""
import os
import time
from typing import Any, Dict, List, Optional

from absl import logging
from tfx.components.pusher import executor as pusher_executor
from tfx.dsl.io import fileio
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import io_utils, proto_utils

from petpark.components.common import storage
from petpark.serving import layout

FINGERPRINT_FILE = 'fingerprint.pb'
SAVED_MODEL_FILE = layout.SAVED_MODEL_FILE


def latest_version_dir(base_directory: str) -> Optional[str]:
    """The highest version folder holding a saved_model.pb, TF Serving's way."""
    folders = layout.version_folders(base_directory, files=fileio)
    return folders[max(folders)] if folders else None


def same_model(model_dir: str, served_dir: str) -> bool:
    """Whether two SavedModels have identical fingerprints (graph, signatures, checkpoint)."""
    paths = [os.path.join(d, FINGERPRINT_FILE) for d in (model_dir, served_dir)]
    if not all(fileio.exists(p) for p in paths):
        return False
    return io_utils.read_bytes_file(paths[0]) == io_utils.read_bytes_file(paths[1])


def publish(model_dir: str, base_directory: str) -> str:
    """Publishes the SavedModel as a new `<base>/<unix time>` version; returns the version."""
    version = int(time.time())
    while fileio.exists(os.path.join(base_directory, str(version))):
        version += 1
    storage.publish_atomically(model_dir, os.path.join(base_directory, str(version)), SAVED_MODEL_FILE)
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
        removed = storage.remove_leftovers(base_directory, SAVED_MODEL_FILE)
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
