"""Atomic file writes: temp file (mode set at creation), fsync, rename or link."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from phase_core.oserrors import from_oserror


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(6)}")


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644, exclusive: bool = False) -> bool:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one.

    The temp file is created with ``mode`` from its first byte. With
    ``exclusive`` the file is linked into place and never replaces an existing
    one: returns False (and writes nothing) if ``path`` already exists.
    """
    path = Path(path)
    tmp = temp_path(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    except OSError as e:
        raise from_oserror(e, path) from None
    try:
        try:
            os.fchmod(fd, mode)  # the umask may have removed bits we asked for
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)
        if exclusive:
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
        else:
            os.replace(tmp, path)
        fsync_dir(path.parent)
        return True
    except OSError as e:
        raise from_oserror(e, path) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@contextlib.contextmanager
def locked(lock_path: Path) -> Iterator[None]:
    """An exclusive advisory lock (flock) held for the duration of the block."""
    import fcntl

    lock_path = Path(lock_path)
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise from_oserror(e, lock_path, "create the lock file") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
