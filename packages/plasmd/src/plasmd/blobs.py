"""Blobs over the transport: serving ``get`` and pulling a blob from a peer.

``pull`` is the one way a node fetches bytes from a peer; ``PeerSource`` wraps
it as a phase-fetch source (for threaded callers such as phase-fetch's
Fetcher), and the worker awaits it directly for a job's module and stdin.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from phase_core import log
from phase_core.canonical import check_content_id
from phase_core.cas import ContentStore
from phase_core.errors import ProtocolViolation, TooLarge, Unavailable
from phase_core.protocol import jobs


class Writer(Protocol):
    """What ``pull`` writes into: a CAS BlobWriter or a phase-fetch Sink."""

    def write(self, data: bytes | memoryview) -> None: ...


StreamOpener = Callable[[], Awaitable[Any]]  # returns an aio.stream.Stream
SEND_PIECE = 64 << 10


async def pull(open_stream: StreamOpener, cid: str, *, max_bytes: int, writer: Writer,
               offset: int = 0) -> int:
    """Ask a peer for blob ``cid`` from ``offset`` and stream it into ``writer``.

    Returns the number of bytes written. Raises ``Unavailable`` if the peer has
    no such blob, ``TooLarge`` if it announces more than ``max_bytes``, and
    ``ProtocolViolation`` if it misbehaves. The caller checks the digest.
    """
    check_content_id(cid)
    stream = await open_stream()
    async with stream:
        req: dict[str, Any] = {"type": "get", "id": cid}
        if offset:
            req["offset"] = offset
        await stream.send(req)
        stream.finish()
        msg = jobs.check(await stream.recv(), "blob", "not_found")
        if msg["type"] == "not_found" or msg["id"] != cid:
            raise Unavailable(f"the peer does not have {cid}")
        if msg["size"] > max_bytes:
            raise TooLarge(f"the peer offers {msg['size']} bytes for {cid}; "
                           f"at most {max_bytes} expected")
        n = 0
        async for chunk in stream.blob_chunks(max_bytes=max_bytes):
            writer.write(chunk)
            n += len(chunk)
        if n != msg["size"]:
            raise ProtocolViolation(f"the peer announced {msg['size']} bytes and sent {n}",
                                    slug="truncated")
        return n


async def pull_into_store(open_stream: StreamOpener, store: ContentStore, cid: str,
                          size: int, max_bytes: int) -> None:
    """Fetch ``cid`` (exactly ``size`` bytes) from a peer into the store, verified."""
    if size > max_bytes:
        raise TooLarge(f"{cid} is {size} bytes; this node accepts at most {max_bytes}")
    with store.writer(cid, expected_size=size) as w:
        await pull(open_stream, cid, max_bytes=size, writer=w)
        w.commit()


async def serve_get(stream: Any, msg: dict[str, Any],
                    lookup: Callable[[str], Path | bytes | None]) -> bool:
    """Answer a ``get`` with the blob (or ``not_found``). Returns True if served."""
    jobs.check(msg, "get")
    cid = msg["id"]
    found = lookup(cid)
    if found is None:
        await stream.send({"type": "not_found", "id": cid})
        return False
    offset = int(msg.get("offset", 0))
    if isinstance(found, bytes):
        data = found[offset:]
        await stream.send({"type": "blob", "id": cid, "size": len(data), "offset": offset})
        await stream.send_blob(data)
        return True
    size = found.stat().st_size - offset
    if size < 0:
        await stream.send({"type": "not_found", "id": cid})
        return False
    await stream.send({"type": "blob", "id": cid, "size": size, "offset": offset})

    def chunks() -> Any:
        # small reads: a handler waiting for a slow reader holds at most one piece
        with open(found, "rb") as f:
            f.seek(offset)
            while data := f.read(SEND_PIECE):
                yield data

    await stream.send_blob_chunks(size, chunks())
    return True


class PeerSource:
    """A phase-fetch ``Source`` that pulls from one peer over the transport.

    ``fetch`` is called from a fetcher thread; the pull runs on the node's loop.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, open_stream: StreamOpener,
                 peer_id: str, timeout_s: float = 300.0) -> None:
        self.loop = loop
        self.open_stream = open_stream
        self.name = f"peer:{peer_id[:16]}"
        self.timeout_s = timeout_s

    def fetch(self, want: Any, sink: Any) -> None:
        fut = asyncio.run_coroutine_threadsafe(
            pull(self.open_stream, want.id, max_bytes=sink.max_bytes, writer=sink,
                 offset=sink.offset), self.loop)
        try:
            fut.result(self.timeout_s)
        except TimeoutError:
            fut.cancel()
            from phase_core.errors import Timeout
            raise Timeout(f"{self.name} did not deliver {want.id} in {self.timeout_s} s"
                          ) from None
        except (ProtocolViolation, TooLarge) as e:
            log.get().warning("fetch.peer_failed", source=self.name, **e.to_record())
            raise
