"""One writer per workdir: an ``fcntl.flock`` on ``<workdir>/.lock``.

``train.py`` holds it exclusively while it writes the run; ``eval.py`` holds it
shared while it reads one. The kernel releases a lock when its holder exits,
even when killed with SIGKILL, so a crashed run never leaves a stale lock.
The exclusive holder writes ``pid host time`` into the file for the message
of whoever is refused.
"""

from __future__ import annotations

import datetime
import fcntl
import os
from pathlib import Path
import socket

LOCK_FILE = ".lock"


class WorkdirBusy(ValueError):
    """The workdir is locked by another process; the message names it."""


class WorkdirLock:
    """``with WorkdirLock(workdir, shared=False):`` holds the lock, or raises WorkdirBusy at once."""

    def __init__(self, workdir: str | os.PathLike, shared: bool = False):
        self.path = Path(workdir) / LOCK_FILE
        self.shared = shared
        self._file = None

    def acquire(self, create: bool = True) -> WorkdirLock:
        """Take the lock (creating the workdir and the lock file if ``create``); WorkdirBusy if it is held.

        With ``create=False`` and no lock file, nothing is done (nobody can hold it).
        """
        if not create and not self.path.exists():
            return self
        if self.shared and self.path.exists():
            f = open(self.path)  # a reader needs no write access to the run
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            f = open(self.path, "a+")
        try:
            fcntl.flock(f, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip()
            f.close()
            raise WorkdirBusy(_busy_message(self.path.parent, holder, self.shared)) from None
        if not self.shared:
            f.seek(0)
            f.truncate()
            since = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
            f.write(f"{os.getpid()} {socket.gethostname()} {since}\n")
            f.flush()
        self._file = f
        return self

    def release(self) -> None:
        if self._file is not None:
            if not self.shared:  # the next holder's message must not name this process
                self._file.truncate(0)
                self._file.flush()
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self) -> WorkdirLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def check_unlocked(workdir: str | os.PathLike) -> None:
    """WorkdirBusy at once if another process holds ``workdir``'s lock; creates nothing."""
    WorkdirLock(workdir).acquire(create=False).release()


def _busy_message(workdir: Path, holder: str, shared: bool) -> str:
    parts = holder.split(" ", 2)
    if len(parts) == 3 and parts[0].isdigit() and _alive(int(parts[0]), parts[1]):
        who = f"in use by pid {parts[0]} on {parts[1]} since {parts[2]}"
    else:
        who = "in use by eval.py (a shared lock)" if not shared else "in use by another process"
    want = "evaluate it" if shared else "train in it"
    return (
        f"workdir {workdir} is {who}: wait until it is done, or stop it, before you {want} "
        "(a killed process releases the lock by itself)"
    )


def _alive(pid: int, host: str) -> bool:
    """False only for a pid of this host that no longer runs (a holder killed before it cleared the file)."""
    if host != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
