"""Local faults: an ``OSError`` from the file system, as a ``PhaseError`` with its path.

A read-only, full or permission-denied file system is not a bug and not bad
input: it is an I/O error (exit 74) that names the file and says what to try.
The file-writing borders of phase-core (fsutil, state, cas, identity) wrap their
system calls in :func:`fs_errors`; ``run_cli`` passes any ``OSError`` that still
escapes through :func:`from_oserror` as a safety net.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator

from phase_core.errors import IOFailure, MissingInput, PhaseError

_HINTS: dict[int, str] = {
    errno.EROFS: "the file system is read-only: point --home (or the option naming "
                 "this file) at a writable directory",
    errno.ENOSPC: "the disk is full: free some space (phase-fetch cas gc) or use "
                  "another --home",
    errno.EDQUOT: "the disk quota is used up: free some space or use another --home",
    errno.EACCES: "permission denied: check the owner and mode of the file and its "
                  "directory",
    errno.EPERM: "operation not permitted: check the owner and mode of the file and "
                 "its directory",
    errno.EISDIR: "that path is a directory: name a file",
    errno.ENOTDIR: "a part of that path is not a directory",
    errno.EIO: "the device reported an I/O error: check the disk",
    errno.EFBIG: "the file is larger than the file system allows",
    errno.ENAMETOOLONG: "the path is too long",
    errno.ELOOP: "the path is a symbolic link (or a loop of them); name the file itself",
}

# Errors that are the machine's, never the program's: mapped to 74 even without a path.
LOCAL_FAULTS = frozenset(_HINTS) | {errno.EMFILE, errno.ENFILE, errno.EMLINK, errno.EXDEV}


def from_oserror(e: OSError, path: str | os.PathLike[str] | None = None,
                 action: str = "write") -> PhaseError:
    """The ``PhaseError`` for ``e``: ``MissingInput`` (66) for a missing file, else
    ``IOFailure`` (74). The message names the path and the error; ``path`` and
    ``errno`` (its symbolic name) are details of the record."""
    where = path if path is not None else e.filename
    reason = e.strerror or str(e)
    name = errno.errorcode.get(e.errno or 0, "")
    details: dict[str, str] = {}
    if where is not None:
        details["path"] = os.fsdecode(where)
    if name:
        details["errno"] = name
    subject = f" {details['path']}" if "path" in details else ""
    if e.errno == errno.ENOENT:
        return MissingInput(f"cannot {action}{subject}: {reason}",
                            hint="check the path (its directory must exist)", **details)
    return IOFailure(f"cannot {action}{subject}: {reason}", hint=_HINTS.get(e.errno or 0),
                     **details)


def is_local_fault(e: OSError) -> bool:
    """True if ``e`` is a file-system fault (it names a file, or is a disk/quota error)."""
    return e.filename is not None or (e.errno in LOCAL_FAULTS)


@contextlib.contextmanager
def fs_errors(path: str | os.PathLike[str], action: str = "write") -> Iterator[None]:
    """Turn an ``OSError`` raised in the block into the ``PhaseError`` for ``path``."""
    try:
        yield
    except OSError as e:
        raise from_oserror(e, path, action) from None
