"""Files a reader may open at any moment: written whole under a temporary name, then renamed."""
import os
import tempfile


def write_text_atomically(path: str, text: str, mode: int = 0o644) -> None:
    """Replaces `path` with `text` in one rename; a failure leaves the old file and no temporary."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f'.{os.path.basename(path)}.', dir=folder)
    try:
        with os.fdopen(descriptor, 'w') as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
