"""Which files a split pattern names, under which image root."""
import os
from typing import List, Tuple

from tfx.dsl.io import fileio

from petpark.components.image_example_gen.records import METADATA_FILE


def image_root(input_base: str, split_pattern: str) -> str:
    """The folder a split pattern's images live under: its part before the first glob."""
    fixed = []
    for part in split_pattern.split('/')[:-1]:
        if any(c in part for c in '*?['):
            break
        fixed.append(part)
    return os.path.join(input_base, *fixed)


def list_image_files(input_base: str, split_pattern: str) -> Tuple[str, List[str]]:
    """Image root and the sorted files the pattern matches (metadata CSV excluded)."""
    root = image_root(input_base, split_pattern)
    metadata_path = os.path.normpath(os.path.join(root, METADATA_FILE))
    files = sorted(p for p in fileio.glob(os.path.join(input_base, split_pattern))
                   if not fileio.isdir(p) and os.path.normpath(p) != metadata_path)
    if not files:
        raise ValueError(f'No files match input pattern {split_pattern!r} under {input_base!r}')
    return root, files
