"""The sink: bytes of one blob on their way into the content store.

Partial-file layout (owned by phase-fetch, inside the store's root)::

    <cas>/partial/<64 hex>    resumable bytes of a blob, named by the id they should hash to
    <cas>/tmp/<pid>-<random>  a private, non-resumable temp file (when the partial is busy)

A partial file is locked (``flock``) by the one process writing it; a second
process fetching the same blob at the same time gets a private temp file
instead. On open, the bytes already present are re-hashed, so a resume starts
with the right running digest. ``commit()`` checks the digest and the size,
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
from pathlib import Path

from phase_core import log
from phase_core.canonical import content_hex
from phase_core.cas import CHUNK, ContentStore
from phase_core.errors import DigestMismatch, IOFailure
from phase_core.fsutil import fsync_dir, make_dirs, open_nofollow

PARTIAL_DIR = "partial"


def partial_path(store: ContentStore, cid: str) -> Path:
    return store.root / PARTIAL_DIR / content_hex(cid)


class PartialWriter:
    """Implements the ``Sink`` protocol (see sources.py) over a (partial) file."""

    def __init__(self, store: ContentStore, cid: str, expected_size: int | None,
                 max_bytes: int, *, resumable: bool = True) -> None:
        self.store = store
        self.id = cid
        self.expected_size = expected_size
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
        if resumable:
            path = partial_path(store, cid)
            make_dirs(path.parent)
            fd = open_nofollow(path, os.O_RDWR | os.O_CREAT, 0o644)  # never a planted link
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self.resumable = True
            except BlockingIOError:
                os.close(fd)
                fd = -1
                log.get().info("fetch.partial_busy", id=cid,
                               message="another process is fetching this blob; "
                                       "using a private temp file")
        if fd < 0:
            path = store.root / "tmp" / f"{os.getpid()}-{secrets.token_hex(8)}"
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
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
