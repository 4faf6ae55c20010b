"""TF Serving's on-disk layout: <base_path>/<int64 version>/saved_model.pb (no TensorFlow import)."""
import os
from typing import Dict

SAVED_MODEL_FILE = 'saved_model.pb'


def versions_on_disk(base_path: str) -> Dict[int, float]:
    """{version: saved_model.pb mtime} for complete numeric version folders.

    A version counts only once saved_model.pb exists: TFX's Pusher copies it last.
    """
    found = {}
    if not os.path.isdir(base_path):
        return found
    for name in os.listdir(base_path):
        marker = os.path.join(base_path, name, SAVED_MODEL_FILE)
        if name.isdigit() and os.path.isfile(marker):
            found[int(name)] = os.path.getmtime(marker)
    return found
