"""Which files a split pattern names, under which image root, and which of them must not be read.

A local folder is listed with Python's own glob and lstat, never by opening anything, so every
directory entry ends up in the report: a name that is not UTF-8, a dangling symlink, a symlink
loop, a symlink leaving the data root, a FIFO or device named like an image are rejected with a
reason instead of aborting (or hanging) the component. Remote URIs (gs://, s3://) hold none of
those and are listed with TFX's fileio.
"""
import dataclasses
import errno
import fnmatch
import os
import re
import stat
from typing import Iterable, List, Optional, Sequence, Tuple

from tfx.components.example_gen import utils
from tfx.dsl.io import fileio
from tfx.proto import example_gen_pb2, range_config_pb2

from petpark.components.common.uris import is_local
from petpark.components.image_example_gen.records import METADATA_FILE


DIRECTORY = 'directory'
_FOLDER_DETAIL = 'a folder the input pattern matches; nothing in it is read'


@dataclasses.dataclass(frozen=True)
class Entry:
    """A matched directory entry: `reason` is empty for a file to read, else why it is not read
    (DIRECTORY: a folder, reported but not a rejected file)."""
    path: str
    image_id: str
    reason: str = ''
    detail: str = ''


def image_root(input_base: str, split_pattern: str) -> str:
    """The folder a split pattern's images live under: its part before the first glob."""
    fixed = []
    for part in split_pattern.split('/')[:-1]:
        if any(c in part for c in '*?['):
            break
        fixed.append(part)
    return os.path.join(input_base, *fixed)


def _glob(pattern: str) -> List[str]:
    """Python's glob, except that wildcards also match names starting with a dot (`.DS_Store`),
    as TF's glob does. Folders that cannot be listed (loops, permissions) match nothing."""
    parts = pattern.split(os.sep)
    paths = [parts[0] or os.sep]
    for part in parts[1:]:
        if not any(c in part for c in '*?['):
            paths = [os.path.join(p, part) for p in paths if os.path.lexists(os.path.join(p, part))]
            continue
        matched = []
        for path in paths:
            try:
                with os.scandir(path) as found:
                    matched.extend(os.path.join(path, e.name) for e in found if fnmatch.fnmatchcase(e.name, part))
            except OSError:
                continue
        paths = matched
    return paths


def _printable(text: str) -> str:
    """A file name as report text: bytes that are not UTF-8 shown as \\xNN."""
    return os.fsencode(text).decode('utf-8', 'backslashreplace')


def _classify(path: str, data_root: str, allow_outside_root: bool) -> Tuple[str, str]:
    """(reason, detail) for an entry that must not be read; ('', '') for a regular file;
    (DIRECTORY, detail) for a folder, which is no file at all."""
    try:
        os.fsencode(path).decode('utf-8')
    except UnicodeDecodeError:
        return 'bad_file_name', 'the file name is not valid UTF-8'
    mode = os.lstat(path).st_mode
    if stat.S_ISLNK(mode):
        try:
            target = os.path.realpath(path, strict=True)
        except FileNotFoundError:
            return 'dangling_symlink', f'points to {_printable(os.readlink(path))!r}, which does not exist'
        except OSError as e:
            if e.errno == errno.ELOOP:
                return 'symlink_loop', 'a loop of symbolic links'
            raise
        if not allow_outside_root and os.path.commonpath([target, data_root]) != data_root:
            return 'symlink_outside_root', f'points outside the data root, to {_printable(target)!r}'
        mode = os.stat(target).st_mode
    if stat.S_ISDIR(mode):
        return DIRECTORY, _FOLDER_DETAIL
    if not stat.S_ISREG(mode):
        kind = 'FIFO' if stat.S_ISFIFO(mode) else 'socket' if stat.S_ISSOCK(mode) else 'device or special file'
        return 'not_a_regular_file', f'a {kind}; it is never opened'
    return '', ''


def list_entries(input_base: str, split_pattern: str, allow_outside_root: bool = False) -> Tuple[str, List[Entry]]:
    """Image root and every entry the pattern matches (the metadata CSV excluded); folders are
    entries with the reason DIRECTORY."""
    root = image_root(input_base, split_pattern)
    metadata_path = os.path.normpath(os.path.join(root, METADATA_FILE))
    entries = []
    if is_local(input_base):
        data_root = os.path.realpath(input_base)
        for path in sorted(_glob(os.path.join(input_base, split_pattern))):
            if os.path.normpath(path) == metadata_path:
                continue
            try:
                reason, detail = _classify(path, data_root, allow_outside_root)
            except OSError as e:  # e.g. removed while being listed
                reason, detail = 'unreadable', f'{type(e).__name__}: {e.strerror}'
            entries.append(Entry(path, _printable(os.path.relpath(path, root)), reason, detail))
    else:
        for path in sorted(fileio.glob(os.path.join(input_base, split_pattern))):
            if os.path.normpath(path) != metadata_path:
                folder = fileio.isdir(path)
                entries.append(Entry(path, os.path.relpath(path, root), DIRECTORY if folder else '',
                                     _FOLDER_DETAIL if folder else ''))
    if all(entry.reason == DIRECTORY for entry in entries):
        raise ValueError(f'No files match input pattern {split_pattern!r} under {input_base!r}')
    return root, entries


def _stat(path: str) -> Optional[os.stat_result]:
    """The file's stat through symlinks, the link's own where it dangles or loops; None if gone."""
    for stat_function in (os.stat, os.lstat):
        try:
            return stat_function(path)
        except OSError:
            continue
    return None


def fingerprint(split_name: str, entries: Iterable[Entry]) -> str:
    """TFX's fingerprint (count, bytes, mtimes) over the entries that are not folders (a folder's
    mtime moves with files the pattern does not match); stat opens no file."""
    count = total = xor = summed = 0
    for entry in entries:
        info = _stat(entry.path) if entry.reason != DIRECTORY else None
        if info is None:  # removed since it was listed: the next run sees the change
            continue
        count, total = count + 1, total + info.st_size
        xor, summed = xor ^ int(info.st_mtime), summed + int(info.st_mtime)
    return f'split:{split_name},num_files:{count},total_bytes:{total},xor_checksum:{xor},sum_checksum:{summed}'


def _spec_regex(pattern: str) -> str:
    """A split pattern as a regex: globs match within one folder, {SPAN} and {VERSION} capture digits."""
    out, position = [], 0
    spec = re.compile(f'(?P<span>{utils.SPAN_FULL_REGEX})|(?P<version>{utils.VERSION_FULL_REGEX})'
                      .replace('(?P<width>', '(?:'))
    for match in spec.finditer(pattern):
        out.append(_glob_regex(pattern[position:match.start()]))
        out.append(r'(?P<span>\d+)' if match.group('span') else r'(?P<version>\d+)')
        position = match.end()
    out.append(_glob_regex(pattern[position:]))
    return ''.join(out) + r'\Z'


def _glob_regex(text: str) -> str:
    return ''.join('[^/]*' if c == '*' else '[^/]' if c == '?' else re.escape(c) for c in text)


def span_and_version(input_base: str, split: example_gen_pb2.Input.Split,
                     range_config: Optional[range_config_pb2.RangeConfig]) -> Tuple[int, Optional[int]]:
    """The latest {SPAN} (within range_config) and its latest {VERSION} among local entries."""
    matches = []
    regex = re.compile(_spec_regex(split.pattern))
    wildcard = re.sub(utils.VERSION_FULL_REGEX, '*', re.sub(utils.SPAN_FULL_REGEX, '*', split.pattern))
    for path in _glob(os.path.join(input_base, wildcard)):
        match = regex.match(os.path.relpath(path, input_base))
        if match:
            version = match.groupdict().get('version')
            matches.append((int(match.group('span')), int(version) if version is not None else None))
    if range_config is not None and range_config.HasField('static_range'):
        low, high = range_config.static_range.start_span_number, range_config.static_range.end_span_number
        matches = [m for m in matches if low <= m[0] <= high]
    elif range_config is not None and range_config.HasField('rolling_range'):
        matches = [m for m in matches if m[0] >= range_config.rolling_range.start_span_number]
    if not matches:
        raise ValueError(f'Cannot find matching for split {split.name} based on {split.pattern}')
    span = max(m[0] for m in matches)
    versions = [m[1] for m in matches if m[0] == span and m[1] is not None]
    return span, max(versions) if versions else None


def resolve(input_base: str, splits: Sequence[example_gen_pb2.Input.Split],
            range_config: Optional[range_config_pb2.RangeConfig]) -> Tuple[str, int, Optional[int]]:
    """(fingerprint, span, version) for local input, as TFX's calculate_splits_fingerprint_span_and_version
    computes it, without opening or stat-ing through any entry."""
    if not os.path.isdir(input_base):
        raise FileNotFoundError(f'ImageExampleGen: the input folder {input_base} does not exist or is not a folder')
    fingerprints, selected = [], None
    for split in splits:
        has_span, has_date, has_version = utils.verify_split_pattern_specs(split)
        if has_date:
            raise ValueError(f'Split pattern {split.pattern!r}: ImageExampleGen reads {{SPAN}} and {{VERSION}}, '
                             'not date specs ({YYYY}, {MM}, {DD})')
        span, version = span_and_version(input_base, split, range_config) if has_span else (0, None)
        if selected is not None and selected != (span, version):
            raise ValueError('Latest span and version should be the same for each split')
        selected = (span, version)
        pattern = utils.get_pattern_for_span_version(split.pattern, has_span, False, has_version, span, version)
        _, entries = list_entries(input_base, pattern)  # rejected entries count too: their changes matter
        fingerprints.append(fingerprint(split.name, entries))
    return '\n'.join(fingerprints), selected[0], selected[1]
