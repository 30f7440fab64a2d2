"""The sink: bytes of one blob on their way into the content store.

Partial-file layout (owned by phase-fetch, inside the store's root)::

    <cas>/partial/<64 hex>          resumable bytes of a blob of known size, named by
                                    the id they should hash to
    <cas>/tmp/fetch-<pid>-<random>  a private, non-resumable temp file: a blob of
                                    unknown size, or one whose partial is busy

Every such file is locked (``flock``) by the one process writing it; a second
process fetching the same blob at the same time gets a private temp file
instead. On open, the bytes already present are re-hashed, so a resume starts
with the right running digest.

Bounds: a partial never holds more than its blob's (known) size; a blob of
unknown size is never kept for a resume, so an endless body leaves nothing
behind once its writer is gone (closed, or killed: ``sweep`` removes every
unlocked ``tmp/fetch-*`` file). ``sweep`` also removes partials untouched for
``MAX_PARTIAL_AGE_S`` and then the oldest ones while there are more than
``MAX_PARTIALS`` or they hold more than ``MAX_PARTIAL_BYTES``; every
``Fetcher`` sweeps its store when it starts, and so does ``cas gc``. A partial
another process holds locked is never touched. ``commit()`` checks the digest and the size,
fsyncs and renames the file into ``sha256/``: a blob in the store always hashes
to its name, whatever happened to this process (kill -9 included). The
partial file is not trusted: if the finished bytes do not match, the caller
discards it and starts again from zero.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from phase_core import log
from phase_core.canonical import content_hex
from phase_core.cas import CHUNK, ContentStore
from phase_core.errors import DigestMismatch, IOFailure
from phase_core.fsutil import fsync_dir, make_dirs, open_nofollow

PARTIAL_DIR = "partial"
TMP_PREFIX = "fetch-"
MAX_PARTIAL_AGE_S = 24 * 3600
MAX_PARTIALS = 32
MAX_PARTIAL_BYTES = 8 << 30


def partial_path(store: ContentStore, cid: str) -> Path:
    return store.root / PARTIAL_DIR / content_hex(cid)


class PartialWriter:
    """Implements the ``Sink`` protocol (see sources.py) over a (partial) file."""

    def __init__(self, store: ContentStore, cid: str, expected_size: int | None,
                 max_bytes: int, *, resumable: bool = True) -> None:
        self.store = store
        self.id = cid
        self.expected_size = expected_size
        self.announced_size: int | None = None  # e.g. a mirror's Content-Length (progress)
        self.max_bytes = max_bytes if expected_size is None else expected_size
        self.size = 0
        self.inherited = 0
        self._hash = hashlib.sha256()
        self._closed = False
        self._committed = False
        self.resumable = False
        try:
            self._open(store, cid, resumable)
        except OSError as e:
            raise IOFailure(f"cannot create a partial file in {store.root}: {e.strerror}",
                            hint="check the store's permissions and free space") from None
        if self.resumable:
            self._rehash()

    def _open(self, store: ContentStore, cid: str, resumable: bool) -> None:
        fd = -1
        if resumable and self.expected_size is not None:
            path = partial_path(store, cid)
            make_dirs(path.parent)
            fd = _open_locked(path)
            if fd < 0:
                log.get().info("fetch.partial_busy", id=cid,
                               message="another process is fetching this blob; "
                                       "using a private temp file")
            else:
                self.resumable = True
        if fd < 0:
            path, fd = _private_temp(store)
        self.path = path
        self._fd = fd

    # -- the Sink protocol ----------------------------------------------------
    @property
    def offset(self) -> int:
        """Bytes held so far; a source that can resume asks for the rest."""
        return self.size

    def write(self, data: bytes | memoryview) -> None:
        n = len(data)
        if self.size + n > self.max_bytes:
            if self.expected_size is not None:
                raise DigestMismatch(
                    f"the source sent more than the expected {self.expected_size} bytes",
                    slug="too_many_bytes", expected_size=self.expected_size)
            raise DigestMismatch(f"the blob is larger than the cap of {self.max_bytes} bytes",
                                 slug="too_large", hint="raise --max-bytes, or give --size")
        self._hash.update(data)
        view = memoryview(data)
        try:
            while view:
                w = os.write(self._fd, view)
                view = view[w:]
        except OSError as e:
            raise IOFailure(f"cannot write {self.path}: {e.strerror}") from None
        self.size += n

    def restart(self) -> None:
        """Drop every byte held (the source cannot resume, or the bytes were bad)."""
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)
        self._hash = hashlib.sha256()
        self.size = 0
        self.inherited = 0
        self.announced_size = None

    def check(self) -> None:
        """Raise ``DigestMismatch`` unless the bytes held are exactly the blob."""
        actual = "sha256:" + self._hash.hexdigest()
        if self.expected_size is not None and self.size != self.expected_size:
            raise DigestMismatch(f"got {self.size} bytes, expected {self.expected_size}",
                                 slug="size_mismatch", expected_size=self.expected_size,
                                 actual_size=self.size)
        if actual != self.id:
            raise DigestMismatch(f"bytes hash to {actual}, expected {self.id}",
                                 expected=self.id, actual=actual)

    # -- for the fetcher --------------------------------------------------------
    def begin_source(self) -> None:
        """Remember how many bytes came from earlier sources or earlier runs."""
        self.inherited = self.size

    def commit(self) -> Path:
        """Check, fsync and rename into the store; return the blob's path."""
        self.check()
        dest = self.store.path_for(self.id)
        try:
            os.fsync(self._fd)
            make_dirs(dest.parent)
            os.replace(self.path, dest)
            fsync_dir(dest.parent)
        except OSError as e:
            raise IOFailure(f"cannot place {self.id} in the store: {e.strerror}") from None
        self._committed = True
        return dest

    def close(self) -> None:
        """Release the file; a non-empty resumable partial stays for the next run."""
        if self._closed:
            return
        self._closed = True
        keep = self.resumable and self.size > 0 and not self._committed
        if not keep and not self._committed:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        os.close(self._fd)  # also releases the lock

    def __enter__(self) -> PartialWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _rehash(self) -> None:
        st = os.fstat(self._fd)
        if st.st_size > self.max_bytes:
            log.get().info("fetch.partial_reset", id=self.id, size_bytes=st.st_size,
                           reason="longer than the blob")
            self.restart()
            return
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        os.lseek(self._fd, 0, os.SEEK_SET)
        while n := os.readv(self._fd, [view]):
            self._hash.update(view[:n])
            self.size += n
        os.lseek(self._fd, self.size, os.SEEK_SET)
        os.ftruncate(self._fd, self.size)
        if self.size:
            log.get().info("fetch.partial_found", id=self.id, size_bytes=self.size)


def _private_temp(store: ContentStore) -> tuple[Path, int]:
    """A new temp file in ``<store>/tmp``, created and locked.

    A concurrent sweep (another fetch, in this process or another) may unlink the
    file between its creation and our lock, since it is free then: when the name no
    longer leads to the inode we locked, start again with a new name.
    """
    make_dirs(store.root / "tmp")
    for _ in range(8):
        path = store.root / "tmp" / f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(8)}"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o644)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # new and private: never busy
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return path, fd
        except FileNotFoundError:
            pass
        os.close(fd)
    raise IOFailure(f"cannot keep a temp file in {store.root / 'tmp'}: each one was "
                    "removed as soon as it was made", hint="is another process sweeping it?")


def _open_locked(path: Path) -> int:
    """Open (creating) and lock ``path``; -1 if another process holds it.

    A sweep may unlink the file between our open and our lock: then the inode we
    locked is no longer at ``path``, so open again.
    """
    for _ in range(3):
        fd = open_nofollow(path, os.O_RDWR | os.O_CREAT, 0o644)  # never a planted link
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return -1
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)
    return -1


@dataclass
class Swept:
    partials: int = 0
    temps: int = 0
    bytes: int = 0


def sweep(store: ContentStore, *, now: float | None = None,
          max_age_s: float = MAX_PARTIAL_AGE_S, max_count: int = MAX_PARTIALS,
          max_bytes: int = MAX_PARTIAL_BYTES) -> Swept:
    """Remove what dead or earlier fetches left behind, within the bounds above.

    Only files this process can lock are touched: a live writer's file stays.
    """
    now = time.time() if now is None else now
    done = Swept()
    tmp = store.root / "tmp"
    if tmp.is_dir():
        for p in tmp.glob(TMP_PREFIX + "*"):
            size = _remove_if_free(p)
            if size is not None:
                done.temps += 1
                done.bytes += size
    d = store.root / PARTIAL_DIR
    kept: list[tuple[float, int, Path]] = []
    for p in d.iterdir() if d.is_dir() else ():
        try:
            st = p.stat()
        except FileNotFoundError:
            continue
        if now - st.st_mtime > max_age_s or st.st_size == 0:
            _count(done, _remove_if_free(p))
        else:
            kept.append((st.st_mtime, st.st_size, p))
    kept.sort(reverse=True)  # newest first: the oldest go when over a bound
    total = 0
    for i, (_, size, p) in enumerate(kept):
        total += size
        if i >= max_count or total > max_bytes:
            freed = _remove_if_free(p)
            _count(done, freed)
            if freed is not None:
                total -= size
    if done.partials or done.temps:
        log.get().info("fetch.partials_swept", partials=done.partials, temps=done.temps,
                       size_bytes=done.bytes)
    return done


def _count(done: Swept, size: int | None) -> None:
    if size is not None:
        done.partials += 1
        done.bytes += size


def _remove_if_free(p: Path) -> int | None:
    """Unlink ``p`` if no process holds its lock; its size, or None if it stays."""
    try:
        fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        size = os.fstat(fd).st_size
        os.unlink(p)
        return size
    except (BlockingIOError, FileNotFoundError):
        return None
    finally:
        os.close(fd)
