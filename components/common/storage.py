"""Writing artifacts and push folders on any filesystem TFX's fileio reads (local, gs://, s3://, ram://).

Executors write through fileio. Libraries that can only write local files (matplotlib, onnx.save)
write into `local_stage()`, a local temporary folder copied to the destination with fileio and
removed on every exit. A push folder (serving, edge, card) is published so that no reader ever
sees it half-written: locally it is staged beside its final name and renamed into place; on an
object store, where a rename is a copy, the file that makes the folder count is copied last, as
TFX's Pusher does.
"""
import contextlib
import os
import re
import shutil
import tempfile
from typing import Iterator, List

from tfx.dsl.io import fileio
from tfx.utils import io_utils

from petpark.components.common.uris import is_local

STAGING_SUFFIX = '.staging'


@contextlib.contextmanager
def local_stage(destination: str) -> Iterator[str]:
    """A local temporary folder; on leaving the block without an error its files are copied to
    `destination` (any fileio filesystem). The folder is removed however the block ends."""
    stage = tempfile.mkdtemp(prefix='petpark-stage-')
    try:
        yield stage
        io_utils.copy_dir(stage, destination)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def write_text(path: str, text: str) -> None:
    """A text file written through fileio (its folder created)."""
    fileio.makedirs(os.path.dirname(path))
    io_utils.write_string_file(path, text)


def read_text(path: str) -> str:
    return io_utils.read_string_file(path)


def publish_atomically(source_dir: str, final_dir: str, marker: str) -> None:
    """Copies `source_dir` to `final_dir` so that no reader sees a half-written folder.

    Locally the copy goes to a hidden staging folder beside it (`.<name>.staging`, a name TF
    Serving and the edge runtime never load), which is then renamed into place. On object
    stores the `marker` file that makes the folder count (saved_model.pb, metadata.json,
    model_card.md) is copied last.
    """
    if not is_local(final_dir):
        io_utils.copy_dir(source_dir, final_dir, deny_regex_patterns=[re.escape(marker)])
        io_utils.copy_file(os.path.join(source_dir, marker), os.path.join(final_dir, marker))
        return
    parent, name = os.path.split(final_dir.rstrip('/'))
    staging = os.path.join(parent, f'.{name}{STAGING_SUFFIX}')
    io_utils.copy_dir(source_dir, staging)
    os.rename(staging, final_dir)


def remove_leftovers(base_directory: str, marker: str) -> List[str]:
    """Removes what killed publications left: staging folders, and numeric folders without their
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
