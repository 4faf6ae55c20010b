"""ServingPusher executor: TFX's Pusher, minus duplicate versions of an unchanged model."""
import os
from typing import Any, Dict, List, Optional

from absl import logging
from tfx.components.pusher import executor as pusher_executor
from tfx.dsl.io import fileio
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import io_utils, proto_utils

FINGERPRINT_FILE = 'fingerprint.pb'


def latest_version_dir(base_directory: str) -> Optional[str]:
    """The highest numeric version folder holding a saved_model.pb, TF Serving's way."""
    if not fileio.isdir(base_directory):
        return None
    versions = [name.rstrip('/') for name in fileio.listdir(base_directory) if name.rstrip('/').isdigit()]
    complete = [v for v in versions if fileio.exists(os.path.join(base_directory, v, 'saved_model.pb'))]
    return os.path.join(base_directory, max(complete, key=int)) if complete else None


def same_model(model_dir: str, served_dir: str) -> bool:
    """Whether two SavedModels have identical fingerprints (graph, signatures, checkpoint)."""
    paths = [os.path.join(d, FINGERPRINT_FILE) for d in (model_dir, served_dir)]
    if not all(fileio.exists(p) for p in paths):
        return False
    return io_utils.read_bytes_file(paths[0]) == io_utils.read_bytes_file(paths[1])


class Executor(pusher_executor.Executor):
    """Pushes blessed models like TFX's Pusher; a model identical to the newest served
    version (e.g. re-blessed against itself as baseline) is recorded as pushed to that
    version instead of being copied again under a new one."""

    def Do(self, input_dict: Dict[str, List[Any]], output_dict: Dict[str, List[Any]],
           exec_properties: Dict[str, Any]) -> None:
        destination = pusher_pb2.PushDestination()
        proto_utils.json_to_proto(exec_properties[standard_component_specs.PUSH_DESTINATION_KEY], destination)
        served = latest_version_dir(destination.filesystem.base_directory) if destination.HasField(
            'filesystem') else None
        if served is None or not self.CheckBlessing(input_dict):
            super().Do(input_dict, output_dict, exec_properties)
            return
        model_path = self.GetModelPath(input_dict)
        if not same_model(model_path, served):
            super().Do(input_dict, output_dict, exec_properties)
            return
        model_push = artifact_utils.get_single_instance(output_dict[standard_component_specs.PUSHED_MODEL_KEY])
        io_utils.copy_dir(model_path, model_push.uri)
        self._MarkPushed(model_push, pushed_destination=served, pushed_version=os.path.basename(served))
        logging.info('Model is already serving as %s; not pushed again.', served)
