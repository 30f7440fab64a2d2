"""Serving blobs over the transport, and moving a machine's outbox onto a stream.

Pulling blobs from a peer is phase-fetch's job (``phase_fetch.peer``); this
module answers ``get``. A node serves only blobs that hash to their id, and it
hashes each stored blob once: ``VerifiedBlobs`` remembers the verdict per file
identity (device, inode, size, mtime), and the hashing runs on a worker
thread, never on the event loop, so many ``get`` requests for a large blob
cost one hash and do not stall the node.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from phase_core.cas import ContentStore, verdict_fresh
from phase_core.errors import PhaseError
from phase_core.protocol.jobs import Out, SendBlob
from phase_core.protocol.jobs_worker import BLOBS_ONLY, BlobWanted, Responder

SEND_PIECE = 64 << 10

FileKey = tuple[int, int, int, int]


async def send_out(stream: Any, items: Iterable[Out]) -> None:
    """Send what a job-exchange machine queued: control frames and blob frames."""
    for it in items:
        if isinstance(it, SendBlob):
            await stream.send_blob(it.data)
        else:
            await stream.send(it)


async def answer_get(stream: Any, responder: Responder, want: BlobWanted,
                     found: Path | bytes | None) -> bool:
    """Answer the ``get`` the responder received with ``found`` (None: not here).
    Returns True if a blob was sent."""
    if isinstance(found, bytes):
        size: int | None = len(found)
    elif found is not None:
        try:
            size = found.stat().st_size
        except FileNotFoundError:
            size = None
    else:
        size = None
    n = responder.answer_get(want.id, size, want.offset)
    await send_out(stream, responder.outbox())
    if n is None:
        return False
    if isinstance(found, bytes):
        await stream.send_blob(found[want.offset:])
    else:
        assert found is not None
        await stream.send_blob_chunks(n, _pieces(found, want.offset))
    return True


def _pieces(path: Path, offset: int) -> Iterator[bytes]:
    # small reads: a handler waiting for a slow reader holds at most one piece
    with open(path, "rb") as f:
        f.seek(offset)
        while data := f.read(SEND_PIECE):
            yield data


async def serve_get(stream: Any, msg: dict[str, Any],
                    lookup: Callable[[str], Path | bytes | None]) -> bool:
    """Answer one ``get`` message with ``lookup``'s blob (a submitter serving the
    blobs of its job). Anything but a ``get`` is a protocol violation."""
    r = Responder(time.monotonic, requests=BLOBS_ONLY)
    ev = r.receive(msg)
    assert isinstance(ev, BlobWanted)
    return await answer_get(stream, r, ev, lookup(ev.id))


class VerifiedBlobs:
    """Which stored blobs hash to their id, hashed once per file identity.

    ``known(cid)`` is cheap (one ``stat``) and safe on the event loop;
    ``verify(cid)`` may hash and belongs on a thread. Concurrent ``verify``
    calls for one blob hash it once. ``hashed`` counts the blobs hashed.
    """

    def __init__(self, cas: ContentStore, clock: Callable[[], float] = time.time) -> None:
        self.cas = cas
        self.clock = clock
        self.hashed = 0
        self._ok: dict[str, FileKey] = {}
        self._lock = threading.Lock()
        self._busy: dict[str, threading.Lock] = {}

    def _key(self, cid: str) -> FileKey | None:
        try:
            st = os.stat(self.cas.path_for(cid))
        except (OSError, PhaseError):
            return None
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def known(self, cid: str) -> Path | None:
        """The blob's path if it was verified and its file has not changed since (and
        that verdict is recent enough: see ``phase_core.cas.verdict_fresh``)."""
        key = self._key(cid)
        if key is None or self._ok.get(cid) != key or not verdict_fresh(key[3], self.clock()):
            return None
        return self.cas.path_for(cid)

    def distrust(self, cid: str) -> None:
        """The blob was read and did not hash to ``cid`` after all (changed in place
        since its verdict): forget the verdict and let the store check it, which
        quarantines a corrupt blob, so the next job fetches it again."""
        with self._lock:
            self._ok.pop(cid, None)
        with contextlib.suppress(PhaseError):
            self.cas.verify(cid)

    def verify(self, cid: str) -> Path | None:
        """The blob's path if it hashes to ``cid`` (hashing only if needed), else None."""
        with self._lock:
            busy = self._busy.setdefault(cid, threading.Lock())
        with busy:
            path = self.known(cid)
            if path is not None:
                return path
            before = self._key(cid)
            if before is None:
                return None
            try:
                path = self.cas.verify(cid)  # a corrupt blob is quarantined by the store
            except PhaseError:
                self._ok.pop(cid, None)
                return None
            finally:
                with self._lock:
                    self.hashed += 1
            after = self._key(cid)  # verify touched the mtime (last use, for the GC)
            if after is not None and after[:3] == before[:3]:  # same file, same size
                self._ok[cid] = after
            return path
