"""TF Serving's on-disk layout: <base_path>/<int64 version>/saved_model.pb (no TensorFlow import).

The one place that says which folders are versions: the server, `petpark promote`, the Pusher
and the edge and card publishers all ask here.
"""
import os
from typing import Callable, Dict, List, Optional

SAVED_MODEL_FILE = 'saved_model.pb'
INT64_MAX = 2 ** 63 - 1


class LocalFiles:
    """The listing functions `complete_versions` needs, for a local folder (TFX's fileio has the same)."""
    isdir = staticmethod(os.path.isdir)
    listdir = staticmethod(os.listdir)
    exists = staticmethod(os.path.isfile)


def version_of(name: str) -> Optional[int]:
    """The version a folder name stands for, as TF Serving reads it: decimal digits of a
    non-negative int64; None for any other name (TF Serving ignores such folders)."""
    name = name.rstrip('/')
    if not name.isascii() or not name.isdigit() or len(name) > 19 or int(name) > INT64_MAX:
        return None
    return int(name)


def is_out_of_range(name: str) -> bool:
    """A folder name of digits that no int64 holds (ignored, and worth saying so once)."""
    name = name.rstrip('/')
    return name.isascii() and name.isdigit() and version_of(name) is None


def version_folders(base_path: str, marker: str = SAVED_MODEL_FILE, files=LocalFiles,
                    on_out_of_range: Optional[Callable[[str], None]] = None) -> Dict[int, str]:
    """{version: its folder} under `base_path` for folders that hold `marker` (TFX's Pusher copies
    saved_model.pb last, so a version without it is still being written). `files`: LocalFiles,
    or TFX's fileio module for any filesystem. `on_out_of_range(name)` hears of each ignored
    name of digits beyond int64, for the caller to log."""
    if not files.isdir(base_path):
        return {}
    found = {}
    for name in files.listdir(base_path):
        version, folder = version_of(name), os.path.join(base_path, name.rstrip('/'))
        if version is not None and files.exists(os.path.join(folder, marker)):
            found[version] = folder
        elif on_out_of_range and is_out_of_range(name):
            on_out_of_range(name.rstrip('/'))
    return found


def complete_versions(base_path: str, marker: str = SAVED_MODEL_FILE, files=LocalFiles) -> List[int]:
    """The sorted versions of version_folders."""
    return sorted(version_folders(base_path, marker, files))


def versions_on_disk(base_path: str, on_out_of_range: Optional[Callable[[str], None]] = None) -> Dict[int, float]:
    """{version: saved_model.pb mtime} for complete version folders of a local base path."""
    found = {}
    for version, folder in version_folders(base_path, on_out_of_range=on_out_of_range).items():
        try:
            found[version] = os.path.getmtime(os.path.join(folder, SAVED_MODEL_FILE))
        except FileNotFoundError:  # removed since it was listed
            continue
    return found
