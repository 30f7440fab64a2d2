"""The content-addressed store (CAS).

Layout under the root::

    sha256/<2 hex>/<62 hex>   blobs, named by the SHA-256 of their bytes
    tmp/                      partial writes (temp + fsync + rename into place)
    quarantine/               blobs whose bytes no longer match their name

Every read re-hashes: a blob whose bytes do not match its id is moved to
quarantine, logged, and reported as ``DigestMismatch`` (slug
``corrupt_blob``); its bytes are never returned. Writes are atomic, so a
killed writer leaves at most a temp file, never a wrong blob.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

from phase_core import log
from phase_core.canonical import check_content_id, content_hex
from phase_core.errors import DigestMismatch, IOFailure, MissingInput, TooLarge
from phase_core.fsutil import fsync_dir, make_dirs
from phase_core.oserrors import from_oserror, fs_errors

CHUNK = 1 << 20
DEFAULT_MAX_BLOB_BYTES = 16 << 30
TMP_MAX_AGE_S = 24 * 3600
# A remembered "this blob hashes to its id" verdict stands only while the blob's
# mtime (its last use, which ``gc`` evicts by) is younger than this. An older one is
# re-verified, which re-hashes and stamps the use, so a blob that is served from the
# verdict alone still looks used to the garbage collector.
VERDICT_MAX_AGE_S = 600


def verdict_fresh(mtime_ns: int, now_s: float | None = None) -> bool:
    """Whether a verdict remembered for a blob whose file has ``mtime_ns`` still stands."""
    now = time.time() if now_s is None else now_s
    return now - mtime_ns / 1e9 < VERDICT_MAX_AGE_S


def _sha256(data: bytes = b"") -> Any:
    """``hashlib.sha256``, imported at first use: opening the store and finding a
    blob in it (``path_for``, ``has``) must not load OpenSSL (a cold start's cost)."""
    import hashlib
    return hashlib.sha256(data)


class BlobWriter:
    """Stream bytes into the store; ``commit()`` checks and places them.

    Use as a context manager: leaving the block without ``commit()`` (or with an
    exception) removes the temp file.
    """

    def __init__(self, store: ContentStore, expected: str | None, max_bytes: int,
                 expected_size: int | None) -> None:
        self.store = store
        self.expected = check_content_id(expected) if expected is not None else None
        self.max_bytes = max_bytes if expected_size is None else min(max_bytes, expected_size)
        self.expected_size = expected_size
        self.size = 0
        self._hash = _sha256()
        self.tmp = store.root / "tmp" / f"{os.getpid()}-{os.urandom(8).hex()}"
        with fs_errors(self.tmp):
            self._fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                               | os.O_CLOEXEC, 0o644)
        self._done = False

    def write(self, data: bytes | memoryview) -> None:
        n = len(data)
        if self.size + n > self.max_bytes:
            raise TooLarge(f"blob is larger than {self.max_bytes} bytes"
                           + (" (its expected size)" if self.expected_size is not None else ""),
                           slug="too_large")
        self._hash.update(data)
        view = memoryview(data)
        with fs_errors(self.tmp):
            while view:
                w = os.write(self._fd, view)
                view = view[w:]
        self.size += n

    def commit(self) -> str:
        cid: str = "sha256:" + self._hash.hexdigest()
        if self.expected is not None and cid != self.expected:
            raise DigestMismatch(f"bytes hash to {cid}, expected {self.expected}",
                                 expected=self.expected, actual=cid)
        if self.expected_size is not None and self.size != self.expected_size:
            raise DigestMismatch(f"got {self.size} bytes, expected {self.expected_size}",
                                 slug="size_mismatch")
        dest = self.store.path_for(cid)
        with fs_errors(dest):
            os.fsync(self._fd)
            os.close(self._fd)
            self._done = True
            make_dirs(dest.parent)  # a new sha256/<2 hex>/ is fsync'd into sha256/
            os.replace(self.tmp, dest)
            fsync_dir(dest.parent)
        return cid

    def abort(self) -> None:
        if not self._done:
            self._done = True
            os.close(self._fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp)

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.abort()


class ContentStore:
    def __init__(self, root: Path, *, max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES,
                 create: bool = True) -> None:
        """``create=False`` opens a store only to read it: nothing is made, so a reader
        works on read-only media (a missing store simply has no blobs)."""
        self.root = Path(root)
        self.max_blob_bytes = max_blob_bytes
        if create:
            for d in ("sha256", "tmp", "quarantine"):
                make_dirs(self.root / d)

    def path_for(self, cid: str) -> Path:
        h = content_hex(cid)
        return self.root / "sha256" / h[:2] / h[2:]

    def has(self, cid: str) -> bool:
        return self.path_for(cid).is_file()

    # -- writing -------------------------------------------------------------
    def writer(self, expected: str | None = None, *, max_bytes: int | None = None,
               expected_size: int | None = None) -> BlobWriter:
        cap = self.max_blob_bytes if max_bytes is None else min(max_bytes, self.max_blob_bytes)
        return BlobWriter(self, expected, cap, expected_size)

    def put_bytes(self, data: bytes, expected: str | None = None) -> str:
        """Store ``data``; a blob already present (same id and size) is not rewritten."""
        cid: str = "sha256:" + _sha256(data).hexdigest()
        if expected is not None and cid != check_content_id(expected):
            raise DigestMismatch(f"bytes hash to {cid}, expected {expected}",
                                 expected=expected, actual=cid)
        path = self.path_for(cid)
        try:
            if path.stat().st_size == len(data):
                with contextlib.suppress(OSError):
                    os.utime(path)  # a use, for LRU garbage collection (not on a read-only store)
                return cid
        except FileNotFoundError:
            pass
        with self.writer(expected, expected_size=None) as w:
            w.write(data)
            return w.commit()

    def put_stream(self, src: BinaryIO, expected: str | None = None, *,
                   max_bytes: int | None = None, expected_size: int | None = None) -> str:
        with self.writer(expected, max_bytes=max_bytes, expected_size=expected_size) as w:
            buf = bytearray(CHUNK)
            view = memoryview(buf)
            while True:
                n = src.readinto(view)  # type: ignore[attr-defined]
                if not n:
                    break
                w.write(view[:n])
            return w.commit()

    def put_file(self, path: Path, expected: str | None = None) -> str:
        try:
            with open(path, "rb", buffering=0) as f:
                return self.put_stream(f, expected)
        except FileNotFoundError:
            raise MissingInput(f"no such file: {path}") from None

    # -- reading (always re-hashed) -------------------------------------------
    def verify(self, cid: str) -> Path:
        """Re-hash the blob; return its path if intact, else quarantine and raise."""
        path = self.path_for(cid)
        h = _sha256()
        try:
            with open(path, "rb", buffering=0) as f:
                buf = bytearray(CHUNK)
                view = memoryview(buf)
                while n := f.readinto(view):
                    h.update(view[:n])
        except FileNotFoundError:
            raise MissingInput(f"{cid} is not in the store at {self.root}") from None
        except OSError as e:
            raise IOFailure(f"cannot read {path}: {e.strerror}") from None
        actual = "sha256:" + h.hexdigest()
        if actual != cid:
            self._quarantine(cid, path, actual)
        with contextlib.suppress(OSError):
            os.utime(path)  # last use, for LRU garbage collection
        return path

    def read(self, cid: str, *, max_bytes: int | None = None) -> bytes:
        """The blob's bytes, checked against its id."""
        path = self.path_for(cid)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise MissingInput(f"{cid} is not in the store at {self.root}") from None
        if max_bytes is not None and size > max_bytes:
            raise TooLarge(f"{cid} is {size} bytes, over the cap of {max_bytes}")
        data = path.read_bytes()
        actual = "sha256:" + _sha256(data).hexdigest()
        if actual != cid:
            self._quarantine(cid, path, actual)
        return data

    def export(self, cid: str, dest: Path) -> Path:
        """Copy a verified blob to ``dest`` atomically (temp + fsync + rename)."""
        dest = Path(dest)
        tmp = dest.with_name(f".{dest.name}.tmp-{os.urandom(6).hex()}")
        h = _sha256()
        src_path = self.path_for(cid)
        try:
            with open(src_path, "rb", buffering=0) as src, open(tmp, "wb") as out:
                buf = bytearray(CHUNK)
                view = memoryview(buf)
                while n := src.readinto(view):
                    h.update(view[:n])
                    out.write(view[:n])
                out.flush()
                os.fsync(out.fileno())
            actual = "sha256:" + h.hexdigest()
            if actual != cid:
                self._quarantine(cid, src_path, actual)
            os.replace(tmp, dest)
            fsync_dir(dest.parent)
            return dest
        except FileNotFoundError as e:
            if e.filename is not None and Path(e.filename) != src_path:
                raise from_oserror(e, dest) from None
            raise MissingInput(f"{cid} is not in the store at {self.root}") from None
        except OSError as e:
            raise from_oserror(e, dest) from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def _quarantine(self, cid: str, path: Path, actual: str) -> None:
        dest = self.root / "quarantine" / f"{content_hex(cid)}.{int(time.time())}"
        with contextlib.suppress(FileNotFoundError):
            os.replace(path, dest)
        log.get().error("cas.corrupt_blob", id=cid, actual=actual, quarantined=str(dest))
        raise DigestMismatch(f"stored blob {cid} is corrupt (its bytes hash to {actual}); "
                             f"moved to {dest}", slug="corrupt_blob",
                             hint="fetch it again", expected=cid, actual=actual)

    # -- housekeeping --------------------------------------------------------
    def delete(self, cid: str) -> bool:
        try:
            os.unlink(self.path_for(cid))
            return True
        except FileNotFoundError:
            return False

    def list(self) -> Iterator[tuple[str, int]]:
        """(content id, size) of every blob; names that are not content ids are skipped."""
        base = self.root / "sha256"
        for sub in sorted(base.iterdir()):
            if not sub.is_dir() or len(sub.name) != 2:
                continue
            for f in sorted(sub.iterdir()):
                cid = f"sha256:{sub.name}{f.name}"
                try:
                    check_content_id(cid)
                except Exception:  # noqa: S112 - a stray file is not a blob
                    continue
                with contextlib.suppress(FileNotFoundError):
                    yield cid, f.stat().st_size

    def size(self) -> int:
        return sum(sz for _, sz in self.list())

    def gc(self, max_bytes: int) -> builtins.list[str]:
        """Delete least recently used blobs until the store holds at most ``max_bytes``.

        Also removes temp files older than a day. Returns the deleted ids.
        """
        now = time.time()
        for t in (self.root / "tmp").iterdir():
            with contextlib.suppress(FileNotFoundError):
                if now - t.stat().st_mtime > TMP_MAX_AGE_S:
                    t.unlink()
        entries = []
        for cid, sz in self.list():
            with contextlib.suppress(FileNotFoundError):
                entries.append((self.path_for(cid).stat().st_mtime, cid, sz))
        total = sum(e[2] for e in entries)
        removed: builtins.list[str] = []
        for _, cid, sz in sorted(entries):
            if total <= max_bytes:
                break
            if self.delete(cid):
                total -= sz
                removed.append(cid)
        return removed
