"""Helpers for loopback transport tests: everything on 127.0.0.1, every test bounded."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import pytest

from phase_core import log
from phase_core.aio import certs, quic

HOST = "127.0.0.1"

TEST_TIMEOUT_S = 60.0


def run(coro: Coroutine[Any, Any, Any], timeout: float = TEST_TIMEOUT_S) -> Any:
    """Run one test coroutine under a hard timeout."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def eventually(cond: Callable[[], bool], timeout: float = 20.0) -> None:
    """Wait until ``cond()`` holds (polling the event loop), or fail."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


class LogCapture:
    def __init__(self) -> None:
        self.buf = io.StringIO()

    def events(self, name: str) -> list[dict[str, Any]]:
        out = []
        for line in self.buf.getvalue().splitlines():
            rec = json.loads(line)
            if rec.get("event") == name:
                out.append(rec)
        return out


@pytest.fixture
def logs(monkeypatch: pytest.MonkeyPatch) -> LogCapture:
    cap = LogCapture()
    monkeypatch.setattr(log.get(), "_stream", cap.buf)
    monkeypatch.setattr(log.get(), "threshold", log.LEVELS["info"])
    return cap


Handler = Callable[[str, Any], Awaitable[None]]


@asynccontextmanager
async def mitm_relay(upstream_port: int) -> AsyncIterator[tuple[int, list[int]]]:
    """A relay that terminates QUIC on both sides with its own certificates and pipes
    each stream's bytes to a fresh upstream connection (as in the transport's MITM test).

    Yields the relay's port and the byte counts forwarded [to upstream, back]."""
    from aioquic.asyncio.client import connect as raw_connect
    from aioquic.asyncio.server import serve as raw_serve
    from aioquic.quic.configuration import QuicConfiguration

    forwarded = [0, 0]
    tasks: list[asyncio.Future[Any]] = []
    upstreams: list[Any] = []

    async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter, i: int) -> None:
        while data := await r.read(65536):
            forwarded[i] += len(data)
            w.write(data)
        w.write_eof()

    async def relay_stream(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        cfg = QuicConfiguration(is_client=True, alpn_protocols=[quic.ALPN], verify_mode=0,
                                server_name=quic.SERVER_NAME)
        c = certs.make()
        cfg.certificate, cfg.private_key = c.certificate, c.private_key
        cm = raw_connect(HOST, upstream_port, configuration=cfg)
        up = await cm.__aenter__()
        upstreams.append(cm)
        ur, uw = await up.create_stream()
        await asyncio.gather(pipe(r, uw, 0), pipe(ur, w, 1), return_exceptions=True)

    scfg = QuicConfiguration(is_client=False, alpn_protocols=[quic.ALPN])
    c = certs.make()
    scfg.certificate, scfg.private_key = c.certificate, c.private_key
    relay = await raw_serve(HOST, 0, configuration=scfg, stream_handler=lambda r, w: tasks.append(
        asyncio.ensure_future(relay_stream(r, w))))
    try:
        yield relay._transport.get_extra_info("sockname")[1], forwarded
    finally:
        for t in tasks:
            t.cancel()
        for cm in upstreams:
            try:
                await asyncio.wait_for(cm.__aexit__(None, None, None), 5)
            except Exception:  # the upstream may already be gone
                pass
        relay.close()


def garbage_initial(rng: Any, size: int = 1200) -> bytes:
    """A datagram that parses as a QUIC v1 Initial (long header, random connection ids,
    no token) and carries random bytes where the encrypted payload should be."""
    dcid, scid = rng.randbytes(8), rng.randbytes(8)
    head = (bytes([0xC3]) + (1).to_bytes(4, "big") + bytes([8]) + dcid + bytes([8]) + scid
            + b"\x00")  # token length 0
    rest = size - len(head) - 2
    return head + (0x4000 | rest).to_bytes(2, "big") + rng.randbytes(rest)


async def tls_only(port: int, cert: Any, *, local_host: str = HOST,
                   push: bytes = b"") -> Any:
    """A raw aioquic client that completes TLS and never starts Noise; with ``push`` it
    sends those bytes on stream 4 (not the handshake stream). Returns the protocol
    (call ``close_raw`` on it)."""
    from aioquic.asyncio.protocol import QuicConnectionProtocol
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import QuicConnection

    loop = asyncio.get_running_loop()
    cfg = QuicConfiguration(is_client=True, alpn_protocols=[quic.ALPN], verify_mode=0,
                            server_name=quic.SERVER_NAME)
    cfg.certificate, cfg.private_key = cert.certificate, cert.private_key
    tr, proto = await loop.create_datagram_endpoint(
        lambda: QuicConnectionProtocol(QuicConnection(configuration=cfg)),
        local_addr=(local_host, 0))
    proto.raw_transport = tr
    proto.connect((HOST, port))
    try:
        await asyncio.wait_for(proto.wait_connected(), 20)
    except BaseException:
        close_raw(proto)
        raise
    if push:
        proto._quic.send_stream_data(4, push)
        proto.transmit()
    return proto


def close_raw(proto: Any) -> None:
    """Vanish without a CONNECTION_CLOSE (the socket is just closed)."""
    if proto._timer is not None:
        proto._timer.cancel()
    proto.raw_transport.close()
