"""Framed streams and transport limits (no aioquic here; see ``aio.quic``).

A ``Stream`` is one request: the side that opens it sends control frames
(JSON objects) and blobs (raw bytes after a 9-byte header), the other side
answers on the same stream, and each side ends its half with ``finish()``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

from phase_core.errors import InputError, ProtocolViolation, Timeout
from phase_core.protocol import framing
from phase_core.protocol.framing import BlobData, BlobEnd, BlobStart, Control, FrameDecoder


@dataclass(frozen=True)
class Limits:
    """Every bound the transport enforces. Defaults suit a node on the open internet."""

    # frames
    max_control_bytes: int = framing.DEFAULT_MAX_CONTROL_BYTES  # 64 KiB per JSON frame
    max_blob_bytes: int = framing.DEFAULT_MAX_BLOB_BYTES  # 1 GiB per blob (lower per call)
    # time
    handshake_timeout_s: float = 10.0  # QUIC + TLS + Noise, from the first packet
    idle_timeout_s: float = 60.0  # QUIC idle timeout: a silent (half-open) peer is dropped
    keepalive_s: float = 15.0  # PING interval on an open connection; 0 disables
    send_timeout_s: float = 30.0  # a peer that stops reading for this long is dropped
    first_message_timeout_s: float = 10.0  # an incoming stream's first frame, complete
    # counts
    max_connections: int = 1024  # per endpoint, authenticated or not
    max_connections_per_peer: int = 4  # authenticated connections per priority node id
    max_connections_per_other_peer: int = 2  # ... per node id the priority callback refuses
    reserved_connections: int = 128  # kept for priority peers (other peers never use them)
    max_pending_handshakes: int = 256  # unauthenticated connections; the oldest is evicted
    max_handshakes_per_source: int = 32  # unauthenticated connections per source address
    max_streams_per_connection: int = 64  # concurrent streams a peer may open (QUIC MAX_STREAMS)
    max_concurrent_streams: int = 1024  # incoming streams being handled, whole endpoint
    reserved_streams: int = 256  # of those, kept for priority peers
    max_streams_per_peer: int = 256  # incoming streams handled per priority node id
    max_streams_per_other_peer: int = 64  # ... per other node id
    # memory (QUIC flow control, granted as the application reads)
    stream_window_bytes: int = 1 << 20  # unread bytes buffered per stream
    connection_window_bytes: int = 4 << 20  # unread bytes buffered per connection
    send_buffer_bytes: int = 1 << 20  # unacknowledged bytes queued per stream before waiting
    handshake_window_bytes: int = 16 << 10  # connection window until the peer is authenticated
    other_connection_window_bytes: int = 1 << 20  # connection window of non-priority peers

    def __post_init__(self) -> None:
        if not 0 < self.max_control_bytes <= framing.HARD_MAX_CONTROL_BYTES:
            raise InputError("max_control_bytes out of range")
        if not 0 <= self.max_blob_bytes <= framing.HARD_MAX_BLOB_BYTES:
            raise InputError("max_blob_bytes out of range")
        for name in ("handshake_timeout_s", "idle_timeout_s", "send_timeout_s",
                     "first_message_timeout_s"):
            if not getattr(self, name) > 0:
                raise InputError(f"{name} must be positive")
        if self.keepalive_s < 0:
            raise InputError("keepalive_s must not be negative")
        for name in ("max_connections", "max_connections_per_peer", "max_concurrent_streams",
                     "max_connections_per_other_peer", "max_pending_handshakes",
                     "max_handshakes_per_source", "max_streams_per_peer",
                     "max_streams_per_other_peer"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be at least 1")
        if not 0 <= self.reserved_streams < self.max_concurrent_streams:
            raise InputError("reserved_streams must be below max_concurrent_streams")
        if self.reserved_connections < 0:
            raise InputError("reserved_connections must not be negative")
        if self.max_streams_per_connection < 2:
            raise InputError("max_streams_per_connection must be at least 2")
        if self.stream_window_bytes < 16 << 10 or self.send_buffer_bytes < 16 << 10:
            raise InputError("windows and buffers must be at least 16 KiB")
        if self.connection_window_bytes < self.stream_window_bytes:
            raise InputError("connection_window_bytes must be at least stream_window_bytes")
        for name in ("handshake_window_bytes", "other_connection_window_bytes"):
            if getattr(self, name) < 16 << 10:  # (used as at most connection_window_bytes)
                raise InputError(f"{name} must be at least 16 KiB")

    @property
    def other_connections(self) -> int:
        """Authenticated connections all non-priority peers together may hold (at least 1)."""
        return max(1, self.max_connections - self.max_pending_handshakes
                   - self.reserved_connections)


class Channel(Protocol):
    """What ``aio.quic`` provides per QUIC stream."""

    stream_id: int

    async def read(self) -> bytes: ...  # b"" at the end of the stream
    async def write(self, data: bytes | memoryview) -> None: ...
    def write_eof(self) -> None: ...
    def abort(self, code: int) -> None: ...
    def violation(self, err: ProtocolViolation) -> None: ...  # drop the whole connection


_CHUNK = 64 << 10


class Stream:
    """A bidirectional request stream to an authenticated peer."""

    def __init__(self, channel: Channel, peer_id: str, limits: Limits,
                 connection: Any = None, *, incoming: bool = False) -> None:
        self._ch = channel
        #: the ``aio.quic.Connection`` this stream belongs to: open more streams
        #: to the same peer with ``stream.connection.open_stream()``
        self.connection = connection
        self.peer_id = peer_id
        self.stream_id = channel.stream_id
        self._limits = limits
        self._dec = FrameDecoder(max_control_bytes=limits.max_control_bytes,
                                 max_blob_bytes=limits.max_blob_bytes)
        self._eof = False
        self._finished = False
        # A stream the peer opened must carry its first whole frame within
        # ``first_message_timeout_s``: a handler's first ``recv()`` is bounded.
        self._deadline: float | None = None
        if incoming:
            self._deadline = asyncio.get_running_loop().time() + limits.first_message_timeout_s

    # -- sending -------------------------------------------------------------

    async def send(self, message: Mapping[str, Any]) -> None:
        """Send one control frame (a JSON object)."""
        await self._ch.write(framing.encode_control(
            message, max_bytes=self._limits.max_control_bytes))

    async def send_blob(self, data: bytes | bytearray | memoryview) -> None:
        """Send a blob held in memory."""
        view = memoryview(data).cast("B")
        await self._ch.write(framing.encode_blob_header(len(view)))
        for off in range(0, len(view), _CHUNK):
            await self._ch.write(view[off:off + _CHUNK])

    async def send_blob_chunks(self, size: int,
                               chunks: Iterable[bytes] | AsyncIterable[bytes]) -> None:
        """Send a blob of ``size`` bytes from an (async) iterable, e.g. a file read in chunks.

        If the chunks do not add up to ``size`` the stream is aborted and ``InputError``
        raised: the peer must never see a blob shorter or longer than announced.
        """
        await self._ch.write(framing.encode_blob_header(size))
        sent = 0
        if isinstance(chunks, AsyncIterable):
            async for chunk in chunks:
                sent = await self._send_chunk(chunk, sent, size)
        else:
            for chunk in chunks:
                sent = await self._send_chunk(chunk, sent, size)
        if sent != size:
            self.abort()
            raise InputError(f"blob source gave {sent} bytes, {size} were announced")

    async def _send_chunk(self, chunk: bytes, sent: int, size: int) -> int:
        if sent + len(chunk) > size:
            self.abort()
            raise InputError(f"blob source gave more than the {size} bytes announced")
        await self._ch.write(chunk)
        return sent + len(chunk)

    def finish(self) -> None:
        """End our half of the stream (FIN). Idempotent."""
        if not self._finished:
            self._finished = True
            self._ch.write_eof()

    def abort(self, code: int = 0x11) -> None:
        """Reset the stream in both directions."""
        self._finished = True
        self._ch.abort(code)

    # -- receiving -----------------------------------------------------------

    async def recv(self) -> dict[str, Any] | None:
        """The next control frame, or None if the peer finished its half cleanly."""
        ev = await self._next()
        if ev is None:
            return None
        if not isinstance(ev, Control):
            self._violate(ProtocolViolation("expected a control frame, the peer sent a blob",
                                            slug="bad_frame"))
        return ev.message

    async def recv_blob(self, *, max_bytes: int | None = None) -> bytes:
        """The next frame, which must be a blob, read whole into memory."""
        parts = [chunk async for chunk in self.blob_chunks(max_bytes=max_bytes)]
        return b"".join(parts)

    async def blob_chunks(self, *, max_bytes: int | None = None) -> AsyncIterator[bytes]:
        """The next frame, which must be a blob, as chunks (stream it to disk)."""
        if max_bytes is not None:
            self._dec.max_blob_bytes = min(max_bytes, self._limits.max_blob_bytes)
        try:
            start = await self._next()
        finally:
            self._dec.max_blob_bytes = self._limits.max_blob_bytes
        if not isinstance(start, BlobStart):
            self._violate(ProtocolViolation("expected a blob, the peer sent "
                                            + ("nothing" if start is None else "a control frame"),
                                            slug="bad_frame"))
        while True:
            ev = await self._next()
            if isinstance(ev, BlobData):
                yield ev.data
            elif isinstance(ev, BlobEnd):
                return
            else:  # pragma: no cover - the decoder never yields anything else inside a blob
                self._violate(ProtocolViolation("blob interrupted", slug="bad_frame"))

    async def _next(self) -> framing.Event | None:
        try:
            while True:
                ev = self._dec.next_event()
                if ev is not None:
                    self._deadline = None
                    return ev
                if self._eof:
                    return None
                data = await (self._ch.read() if self._deadline is None else self._first_read())
                if data:
                    self._dec.feed(data)
                else:
                    self._eof = True
                    self._dec.feed_eof()
        except ProtocolViolation as e:
            self._violate(e)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _first_read(self) -> bytes:
        assert self._deadline is not None
        left = self._deadline - asyncio.get_running_loop().time()
        try:
            if left <= 0:
                raise TimeoutError
            async with asyncio.timeout(left):  # (wait_for can drop a cancellation)
                return await self._ch.read()
        except TimeoutError:
            self._deadline = None
            self.abort()
            raise Timeout(f"the peer opened a stream and sent no complete request in "
                          f"{self._limits.first_message_timeout_s:g} s",
                          slug="request_timeout") from None

    def _violate(self, err: ProtocolViolation) -> NoReturn:
        self._ch.violation(err)
        raise err

    # -- context manager -------------------------------------------------------

    async def __aenter__(self) -> Stream:
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.finish()
        else:
            self.abort()

    def __repr__(self) -> str:
        return f"Stream(peer={self.peer_id[:16]}…, id={self.stream_id})"
