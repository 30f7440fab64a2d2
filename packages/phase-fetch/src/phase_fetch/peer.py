"""Peers as a source: pull a blob from a node over the Phase transport.

``pull`` asks one peer for one blob on a new stream (``get`` → ``blob`` + bytes,
or ``not_found``); the order and sizes are checked by the sans-I/O
``phase_core.protocol.jobs_client.BlobRequest``. ``PeerSource`` wraps it as a
``Source`` for the ``Fetcher``, which hashes the bytes into its store: plasmd's
worker fetches a job's module and stdin from the submitter this way.

The transport runs on an asyncio loop and the fetcher on threads: ``fetch`` runs
the pull on the loop and waits for it, up to ``timeout_s``. This module needs
only a stream opener (``aio.quic.Connection.open_stream``); it imports no
networking itself.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from phase_core import log
from phase_core.canonical import check_content_id
from phase_core.errors import DigestMismatch, ProtocolViolation, Timeout
from phase_core.protocol.jobs_client import BlobRequest
from phase_fetch.want import Want

StreamOpener = Callable[[], Awaitable[Any]]  # returns an aio.stream.Stream


class Writer(Protocol):
    def write(self, data: bytes | memoryview) -> None: ...


async def pull(open_stream: StreamOpener, cid: str, *, max_bytes: int, writer: Writer,
               offset: int = 0, size: int | None = None) -> int:
    """Ask a peer for blob ``cid`` from ``offset`` and stream it into ``writer``.

    Returns the number of bytes written. Raises ``Unavailable`` if the peer has
    no such blob, ``DigestMismatch`` if it offers another size than ``size`` (the
    whole blob's, when known) or more than ``max_bytes`` in all, and
    ``ProtocolViolation`` if it breaks the protocol. The caller checks the digest.
    """
    check_content_id(cid)
    req = BlobRequest(time.monotonic, cid, offset=offset, size=size, max_bytes=max_bytes)
    req.start()
    stream = await open_stream()
    async with stream:
        for msg in req.outbox():
            await stream.send(msg)
        stream.finish()
        n = req.receive(await stream.recv())
        async for chunk in stream.blob_chunks(max_bytes=n):
            req.receive_chunk(len(chunk))
            writer.write(chunk)
        req.receive_blob_end()
        return n


class PeerSource:
    """A ``Source`` that pulls from one peer over the transport.

    ``fetch`` is called from a fetcher thread; the pull runs on ``loop`` (the
    loop that owns the connection) and must finish within ``timeout_s``.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, open_stream: StreamOpener,
                 peer_id: str, timeout_s: float = 300.0) -> None:
        self.loop = loop
        self.open_stream = open_stream
        self.name = f"peer:{peer_id[:16]}"
        self.timeout_s = timeout_s

    def fetch(self, want: Want, sink: Any) -> None:
        fut = asyncio.run_coroutine_threadsafe(
            pull(self.open_stream, want.id, max_bytes=sink.max_bytes, writer=sink,
                 offset=sink.offset, size=want.size), self.loop)
        try:
            fut.result(self.timeout_s)
        except (TimeoutError, concurrent.futures.TimeoutError):
            fut.cancel()
            raise Timeout(f"{self.name} did not deliver {want.id} in {self.timeout_s:.0f} s",
                          id=want.id) from None
        except (ProtocolViolation, DigestMismatch) as e:
            log.get().warning("fetch.peer_failed", source=self.name, **e.to_record())
            raise


__all__ = ["PeerSource", "pull"]
