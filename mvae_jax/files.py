"""Files written so that a reader, or a process killed mid-write, never sees half of one."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
import tempfile

# The process's umask, read once at import (reading it means setting it, which is not safe once threads run).
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that readers see the old or the new file, never half of one."""
    atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new file, never half of one.

    The file gets the permissions the umask gives a new file (0644 under umask 022), as ``open`` would.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; a file written normally honours the umask
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def unwritable(path: str | os.PathLike) -> str | None:
    """Why ``path`` (which need not exist yet) could not be created and written, or None if it could.

    Checks the nearest existing ancestor, creating nothing: "<it> is not a directory" or "<it> is not writable".
    """
    path = Path(path).absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        return f"{existing} is not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    return None


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike):
    """Hold an exclusive ``fcntl.flock`` on ``path`` (created if missing), waiting for other holders: for a
    read-modify-write of a file that several processes update (eval.py's metrics.json)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
