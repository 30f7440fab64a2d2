"""Atomic file writes: temp file (mode set at creation), fsync, rename or link.

Also: opening files that must not be symbolic links (``open_nofollow``), and
creating directories durably (``make_dirs``: a new directory is fsync'd into its
parent, so a crash cannot lose the directory that holds a committed file).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from phase_core.errors import IOFailure
from phase_core.oserrors import from_oserror


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(path: Path, mode: int = 0o777) -> None:
    """Create ``path`` and its missing parents; fsync each new one into its parent.

    Cheap when ``path`` exists (one ``stat``). Raises ``IOFailure``.
    """
    path = Path(path)
    missing: list[Path] = []
    p = path
    while not p.is_dir():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    try:
        for d in reversed(missing):
            with contextlib.suppress(FileExistsError):  # a racing creator; fsync anyway
                os.mkdir(d, mode)
            fsync_dir(d.parent)
    except OSError as e:
        raise from_oserror(e, e.filename or path, "create the directory") from None


def open_nofollow(path: Path, flags: int, mode: int = 0o600) -> int:
    """``os.open`` for a file that must be a regular file and never a symbolic link.

    A link planted where a store, journal or lock file belongs would otherwise
    make us truncate or append to its target. Raises ``IOFailure`` for a link
    or a non-regular file; other ``OSError`` propagate to the caller.
    """
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise IOFailure(f"{path} is a symbolic link; refusing to follow it",
                            hint="remove the link; Phase never creates one there") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise IOFailure(f"{path} is not a regular file", hint="remove it")
    return fd


def temp_path(path: Path) -> Path:
    # 6 random bytes from the kernel, as secrets.token_hex(6) (not imported: start-up)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{os.urandom(6).hex()}")


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644, exclusive: bool = False) -> bool:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one.

    The temp file is created with ``mode`` from its first byte. With
    ``exclusive`` the file is linked into place and never replaces an existing
    one: returns False (and writes nothing) if ``path`` already exists.
    """
    path = Path(path)
    tmp = temp_path(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     mode)
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
        fd = open_nofollow(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as e:
        raise from_oserror(e, lock_path, "create the lock file") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
