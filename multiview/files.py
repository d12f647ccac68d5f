"""Atomic file writes that respect the umask: the project's one way of putting a file on disk.

A file is written under a temporary name in its own folder and renamed into place, so a killed
writer never leaves a half-written file and an existing file is only ever replaced by a complete
one. ``tempfile.mkstemp`` creates its file with mode 0600; the finished file gets the mode a plain
``open(path, "w")`` would give (0666 less the umask), so colleagues on a shared machine can read
results as they can read any other file of the user.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


def _file_mode() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return 0o666 & ~mask


FILE_MODE = _file_mode()


@contextmanager
def atomic_file(path: str | os.PathLike):
    """A binary file handle whose content appears at ``path`` only when the block ends cleanly."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see the module docstring)."""
    with atomic_file(path) as fh:
        fh.write(data)
    return Path(path)
