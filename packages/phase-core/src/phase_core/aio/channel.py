"""One QUIC stream's bytes for ``aio.stream.Stream`` (no aioquic here; see ``aio.quic``).

Reading grants flow-control credit (the connection decides when to send it), so a
peer can never make us buffer more than the windows; writing waits for room.
"""

from __future__ import annotations

import asyncio
from typing import Any

from phase_core.errors import InternalError, ProtocolViolation, Unavailable


class QuicChannel:
    """One QUIC stream's bytes, with read-driven flow control and bounded writes."""

    def __init__(self, proto: Any, stream_id: int) -> None:
        self.proto = proto
        self.stream_id = stream_id
        self.consumed = 0
        self._buf = bytearray()
        self._eof = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._write_closed = False

    # called by the protocol
    def feed(self, data: bytes, end: bool) -> None:
        if self._error is None:
            self._buf += data
        else:
            self.proto.credit(self, len(data))
        if end:
            self._eof = True
        self._wake()

    def fail(self, err: BaseException, *, closing: bool = False) -> None:
        if closing and self._eof:
            return  # the peer finished its half: let the reader drain what arrived
        if self._error is None:
            self._error = err
            dropped = len(self._buf)
            self._buf.clear()
            self.proto.credit(self, dropped)
        self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    # the Channel protocol used by Stream
    async def read(self) -> bytes:
        while not self._buf:
            if self._error is not None:
                raise self._error
            if self._eof:
                return b""
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self._error is not None:
            raise self._error
        data = bytes(self._buf)
        self._buf.clear()
        self.proto.credit(self, len(data))
        return data

    async def write(self, data: bytes | memoryview) -> None:
        if self._error is not None:
            raise self._error
        if self._write_closed:
            raise InternalError("write after finish() on a stream")
        await self.proto.send(self.stream_id, bytes(data))

    def write_eof(self) -> None:
        if self._write_closed or self._error is not None:
            return
        self._write_closed = True
        self.proto.send_eof(self.stream_id)

    def abort(self, code: int) -> None:
        self._write_closed = True
        self.proto.abort_stream(self.stream_id, code)
        self.fail(Unavailable("stream aborted"))

    def violation(self, err: ProtocolViolation) -> None:
        self.proto.violation(err)
