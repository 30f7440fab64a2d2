"""One plasmd per home: an exclusive lock held for the daemon's whole life.

``<home>/plasmd.lock`` is opened with ``O_NOFOLLOW`` (a symlink planted there is
refused, never followed) and locked with ``flock(LOCK_EX | LOCK_NB)``. The kernel
drops the lock when the process exits in any way, kill -9 included, so a stale
lock file never blocks a restart. The holder writes one JSON line into the file
(``{"pid": N, "socket": "<home>/plasmd.sock"}``) so that a second ``plasmd start``
can say who is running. Everything that writes the home's receipt log (the daemon,
``plasmd receipts --repair``) holds this lock first, so the log has one writer.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
from pathlib import Path
from typing import Any

from phase_core.errors import IOFailure, TempFailure
from phase_core.fsutil import fsync_dir

MAX_INFO = 4096


class HomeInUse(TempFailure):
    """Another process holds the home (exit 75: retry once it has stopped)."""

    slug = "home_in_use"


def lock_path(home: Path) -> Path:
    return Path(home) / "plasmd.lock"


class HomeLock:
    """The held lock; ``release()`` (or process exit) gives it up."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    def describe(self, **info: Any) -> None:
        """Record who holds the lock (read by a refused second start)."""
        if self._fd is None:
            return
        data = json.dumps({"pid": os.getpid(), **info}, separators=(",", ":")).encode()
        try:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, data + b"\n", 0)
        except OSError as e:
            raise IOFailure(f"cannot write {self.path}: {e.strerror}") from None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor drops the flock
            self._fd = None

    def __enter__(self) -> HomeLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def holder(path: Path) -> dict[str, Any]:
    """What the current holder wrote into the lock file ({} if nothing readable)."""
    with contextlib.suppress(OSError, ValueError):
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            info = json.loads(os.read(fd, MAX_INFO) or b"{}")
        finally:
            os.close(fd)
        if isinstance(info, dict):
            return info
    return {}


def acquire(home: Path, what: str = "plasmd start") -> HomeLock:
    """Take the home's lock or raise ``HomeInUse`` naming the holder's pid and socket."""
    path = lock_path(home)
    created = not path.exists()
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise IOFailure(f"{path} is a symbolic link; refusing to follow it",
                            hint="remove it; plasmd creates its lock file itself") from None
        raise IOFailure(f"cannot open {path}: {e.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        info = holder(path)
        pid = info.get("pid", "unknown")
        sock = info.get("socket", str(Path(home) / "plasmd.sock"))
        raise HomeInUse(f"{what}: the home {home} is in use by plasmd pid {pid} "
                        f"(control socket {sock})",
                        hint="stop that node first (kill -TERM it and wait), or use "
                             "another --home") from None
    except OSError as e:
        os.close(fd)
        raise IOFailure(f"cannot lock {path}: {e.strerror}") from None
    if created:
        fsync_dir(path.parent)
    return HomeLock(path, fd)
