"""One local run per metadata store at a time, and a way to tell a live run from a killed one.

A run holds an exclusive lock on `<metadata file>.lock` while it runs. The lock goes with the
process, however it ends: an execution MLMD still records as RUNNING while nobody holds the
lock belongs to a run that was killed.
"""
import fcntl
import os


class RunInProgress(RuntimeError):
    """Another run is using the same metadata store."""


class RunLock:
    """Context manager held for the duration of a run on the store at `metadata_path`."""

    def __init__(self, metadata_path: str):
        self.path = metadata_path + '.lock'
        self._fd = None

    def __enter__(self) -> 'RunLock':
        os.makedirs(os.path.dirname(self.path) or '.', exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors='replace').strip() or 'unknown'
            os.close(fd)
            raise RunInProgress(f'another run (pid {holder}) is using {self.path[:-5]}; '
                                'wait for it to finish or use another PETPARK_HOME') from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        os.close(self._fd)  # closing releases the lock
        self._fd = None


def run_in_progress(metadata_path: str) -> bool:
    """Whether a run holds the lock of the store at `metadata_path` now."""
    try:
        fd = os.open(metadata_path + '.lock', os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
