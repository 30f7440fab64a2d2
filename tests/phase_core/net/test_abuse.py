"""Transport floods on loopback: streams, data before authentication, Initial packets.

Each test shows that an honest (priority) peer is still served while the attack
is in place, and that the attack is refused, evicted or dropped — counted, and
logged as a bounded number of lines.
"""

from __future__ import annotations

import asyncio
import random
import socket
from typing import Any

import pytest

from phase_core.aio import certs, quic
from phase_core.aio.stream import Limits, Stream
from phase_core.errors import PhaseError, ProtocolViolation, TempFailure, Unavailable
from phase_core.identity import Identity
from tests.phase_core.net.conftest import (
    HOST,
    LogCapture,
    close_raw,
    eventually,
    garbage_initial,
    run,
    tls_only,
)


async def ping_handler(peer: str, stream: Stream) -> None:
    msg = await stream.recv()
    if msg is not None:
        await stream.send({"type": "pong", "peer": peer})


async def ping(conn: quic.Connection) -> dict[str, Any] | None:
    s = await conn.open_stream()
    await s.send({"type": "ping"})
    s.finish()
    return await s.recv()


def test_a_stream_without_a_request_is_reset_after_the_first_message_deadline() -> None:
    """One byte of a frame header, then nothing: the handler's first recv() fails with
    ``request_timeout`` and the stream is reset; the connection stays usable."""
    seen: list[str] = []

    async def handler(peer: str, stream: Stream) -> None:
        try:
            await ping_handler(peer, stream)
        except PhaseError as e:
            seen.append(e.slug)
            raise

    async def main() -> None:
        server = await quic.listen(HOST, 0, Identity.generate(), handler,
                                   Limits(first_message_timeout_s=0.3))
        try:
            conn = await quic.connect(HOST, server.port, Identity.generate())
            s = await conn.open_stream()
            await s._ch.write(b"J")
            with pytest.raises(Unavailable) as ei:
                await s.recv()
            assert ei.value.slug == "stream_reset"
            assert seen == ["request_timeout"]
            assert server.stats["request_timeouts"] == 1
            assert (await ping(conn) or {})["type"] == "pong"
            assert server.stats["protocol_violations"] == 0
            await conn.close()
        finally:
            await server.close()

    run(main())


def test_peers_outside_the_priority_set_cannot_take_every_stream() -> None:
    """Four fresh keys open every stream they may and send one byte on each; the
    priority peer's request is still answered, and the others got only their share."""
    lim = Limits(max_concurrent_streams=64, reserved_streams=16, max_streams_per_other_peer=8,
                 max_streams_per_peer=32, max_streams_per_connection=16)
    honest = Identity.generate()

    async def main() -> dict[str, int]:
        server = await quic.listen(HOST, 0, Identity.generate(), ping_handler, lim,
                                   priority=lambda p: p == honest.node_id)
        conns: list[quic.Connection] = []
        try:
            refused = 0
            for _ in range(4):
                ident = Identity.generate()
                for _ in range(4):
                    try:
                        c = await quic.connect(HOST, server.port, ident)
                    except TempFailure:
                        refused += 1
                        continue
                    conns.append(c)
                    for _ in range(16):
                        s = await c.open_stream()
                        await s._ch.write(b"J")
            # every attacker stream was either accepted (and waits) or refused
            await eventually(lambda: server.stats["streams_accepted"]
                             + server.stats["streams_refused"] == 16 * len(conns))
            assert refused == 4 * (4 - lim.max_connections_per_other_peer)
            assert server.stats["streams_accepted"] == 4 * lim.max_streams_per_other_peer
            good = await quic.connect(HOST, server.port, honest)
            for _ in range(3):
                assert (await ping(good) or {})["type"] == "pong"
            await good.close()
            return dict(server.stats)
        finally:
            await asyncio.gather(*(c.close() for c in conns))
            await server.close()

    stats = run(main())
    assert stats["streams_refused"] > 0


def test_a_priority_peer_is_served_when_other_peers_fill_the_stream_pool() -> None:
    """Many fresh keys within their share fill the pool open to them; the reserve
    is left for the priority peer."""
    lim = Limits(max_concurrent_streams=32, reserved_streams=8, max_streams_per_other_peer=8,
                 max_streams_per_connection=16)
    honest = Identity.generate()

    async def main() -> dict[str, int]:
        server = await quic.listen(HOST, 0, Identity.generate(), ping_handler, lim,
                                   priority=lambda p: p == honest.node_id)
        conns = [await quic.connect(HOST, server.port, Identity.generate()) for _ in range(5)]
        try:
            for c in conns:
                for _ in range(8):
                    s = await c.open_stream()
                    await s._ch.write(b"J")
            await eventually(lambda: server.stats["streams_accepted"]
                             + server.stats["streams_refused"] == 40)
            assert server.stats["streams_accepted"] == 24  # max_concurrent - reserved
            good = await quic.connect(HOST, server.port, honest)
            assert (await ping(good) or {})["type"] == "pong"
            other = await quic.connect(HOST, server.port, Identity.generate())
            with pytest.raises(Unavailable):
                await ping(other)  # the reserve is not for everyone
            await asyncio.gather(good.close(), other.close())
            return dict(server.stats)
        finally:
            await asyncio.gather(*(c.close() for c in conns))
            await server.close()

    run(main())


def test_data_on_another_stream_before_authentication_closes_the_connection() -> None:
    """TLS done, no Noise, a megabyte pushed on stream 4: nothing of it is buffered
    for a handler; the connection is dropped as a handshake failure."""
    handled: list[str] = []

    async def handler(peer: str, stream: Stream) -> None:
        handled.append(peer)

    async def main() -> dict[str, int]:
        server = await quic.listen(HOST, 0, Identity.generate(), handler)
        cert = certs.make()
        protos = [await tls_only(server.port, cert, push=b"J" * (1 << 20)) for _ in range(5)]
        try:
            await eventually(lambda: server.stats["handshake_failed"] == 5)
            await eventually(lambda: server.connection_count == 0)
            for p in protos:  # the server said why
                await asyncio.wait_for(p.wait_closed(), 10)
            # and accepted at most the pre-authentication window from each
            for p in protos:
                assert p._quic._remote_max_data <= Limits().handshake_window_bytes
            return dict(server.stats)
        finally:
            for p in protos:
                close_raw(p)
            await server.close()

    stats = run(main())
    assert handled == [] and stats.get("streams_accepted", 0) == 0


def _spray(port: int, n: int, seed: int, source: str = HOST) -> None:
    rng = random.Random(seed)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source, 0))
        for _ in range(n):
            s.sendto(garbage_initial(rng), (HOST, port))


def test_garbage_initials_create_no_connection_with_address_validation(
        logs: LogCapture) -> None:
    async def main() -> dict[str, int]:
        server = await quic.listen(HOST, 0, Identity.generate(), ping_handler)
        try:
            await asyncio.get_running_loop().run_in_executor(None, _spray, server.port,
                                                             1500, 1)
            good = await quic.connect(HOST, server.port, Identity.generate())
            assert (await ping(good) or {})["type"] == "pong"
            assert server.connection_count == 1  # the honest one only
            assert len(set(server._server._protocols.values())) == 1
            await good.close()
            return dict(server.stats)
        finally:
            await server.close()

    stats = run(main())
    assert stats["connections_opened"] == 1
    assert logs.events("net.peer_dropped") == [] and logs.events("net.handshakes_dropped") == []


def test_without_retry_garbage_initials_evict_each_other_not_the_honest_peer(
        logs: LogCapture) -> None:
    """No address validation: each garbage Initial makes a connection, but only
    ``max_pending_handshakes`` of them exist at once (the oldest is evicted), an
    honest handshake still completes, and the drops are one summary line."""
    lim = Limits(max_pending_handshakes=64, max_handshakes_per_source=2000)

    async def main() -> dict[str, int]:
        server = await quic.listen(HOST, 0, Identity.generate(), ping_handler, lim, retry=False)
        try:
            rng = random.Random(2)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                for batch in range(1, 17):  # in batches the socket buffer surely holds
                    for _ in range(32):
                        sock.sendto(garbage_initial(rng), (HOST, server.port))
                    await eventually(lambda b=batch: server.stats["connections_opened"] >= 32 * b)
                    assert server.connection_count <= 64
            good = await quic.connect(HOST, server.port, Identity.generate())
            assert (await ping(good) or {})["type"] == "pong"
            await good.close()
            return dict(server.stats)
        finally:
            await server.close()

    stats = run(main())
    assert stats["handshakes_evicted"] >= 512 - 64
    summaries = logs.events("net.handshakes_dropped")
    assert len(summaries) == 1 and summaries[0]["counts"]["evicted"] == stats["handshakes_evicted"]
    assert logs.events("net.peer_dropped") == []


def test_one_source_cannot_hold_more_than_its_share_of_handshakes() -> None:
    """Half-open clients from 127.0.0.2 evict each other; 127.0.0.1 is not affected."""
    lim = Limits(max_handshakes_per_source=4)

    async def main() -> dict[str, int]:
        server = await quic.listen(HOST, 0, Identity.generate(), ping_handler, lim)
        cert = certs.make()
        protos = [await tls_only(server.port, cert, local_host="127.0.0.2") for _ in range(12)]
        try:
            assert server.stats["handshakes_evicted"] == 8
            assert server.connection_count == 4
            good = await quic.connect(HOST, server.port, Identity.generate())
            assert (await ping(good) or {})["type"] == "pong"
            await good.close()
            return dict(server.stats)
        finally:
            for p in protos:
                close_raw(p)
            await server.close()

    run(main())


def test_a_peer_outside_the_priority_set_gets_a_smaller_connection_window() -> None:
    """Unread data a handler leaves is bounded per connection by the window granted:
    ``other_connection_window_bytes`` for strangers, the full window for priority peers."""
    lim = Limits(other_connection_window_bytes=64 << 10)
    honest = Identity.generate()
    release = asyncio.Event()

    async def slow(peer: str, stream: Stream) -> None:
        await stream.recv()  # one frame, then the rest stays unread for a while
        await release.wait()

    async def push(conn: quic.Connection) -> int:
        """Four streams of 1 MiB (the stream window) each, until flow control stops them."""
        tasks = []
        for _ in range(4):
            s = await conn.open_stream()
            await s.send({"type": "first"})
            tasks.append(asyncio.ensure_future(s._ch.write(b"x" * (1 << 20))))
        q = conn._proto._quic
        await eventually(lambda: q._remote_max_data_used
                         >= min(q._remote_max_data, 4 << 20) - (64 << 10))
        for t in tasks:
            t.cancel()
        return int(q._remote_max_data)

    async def main() -> tuple[int, int]:
        server = await quic.listen(HOST, 0, Identity.generate(), slow, lim,
                                   priority=lambda p: p == honest.node_id)
        try:
            stranger = await quic.connect(HOST, server.port, Identity.generate())
            friend = await quic.connect(HOST, server.port, honest)
            granted = await push(stranger), await push(friend)
            release.set()
            await asyncio.gather(stranger.close(), friend.close())
            return granted
        finally:
            await server.close()

    other, full = run(main())
    assert other <= 2 * (64 << 10) and full >= Limits().connection_window_bytes


def test_the_rest_of_a_refused_stream_is_dropped_not_handled_from_mid_frame() -> None:
    """A stream refused on its first bytes: the rest of its request, already on the way,
    may arrive after the cause of the refusal is gone (a handler slot freed) and before
    the client's reset. It must be dropped, not handed to a new handler in the middle of
    a frame (that was a bad_frame protocol violation dropping the whole connection)."""

    async def main() -> dict[str, int]:
        server = await quic.listen(HOST, 0, Identity.generate(), ping_handler)
        conn = await quic.connect(HOST, server.port, Identity.generate())
        try:
            assert (await ping(conn) or {}).get("type") == "pong"
            (proto,) = server._ep.protocols
            handler, server._ep.handler = server._ep.handler, None  # refuse the next stream
            refuse = proto.abort_stream

            def refused_then_the_rest_arrives(sid: int, code: int) -> None:
                refuse(sid, code)
                server._ep.handler = handler  # room again ...
                proto._on_stream_data(sid, b"\x00\x00\x07garbage", False)  # ... the rest

            proto.abort_stream = refused_then_the_rest_arrives  # type: ignore[method-assign]
            s = await conn.open_stream()
            await s._ch.write(b"J\x00")  # the start of a frame header
            await eventually(lambda: server.stats["streams_refused"] == 1)
            proto.abort_stream = refuse  # type: ignore[method-assign]
            assert (await ping(conn) or {}).get("type") == "pong"  # still connected
            return dict(server.stats)
        finally:
            await conn.close()
            await server.close()

    stats = run(main())
    assert stats.get("protocol_violations", 0) == 0
    assert stats["streams_accepted"] == 2  # the two pings, nothing from mid-frame


def test_a_stream_whose_handler_never_ran_is_still_counted_out() -> None:
    """Two streams of one peer dispatched in the same turn of the loop; the first
    one's handler finds a protocol violation, and dropping the connection cancels the
    second handler before it ever ran. Its place in the node's stream counts must be
    given back all the same: otherwise each such connection would shrink the stream
    pool of every peer for good."""
    ran: list[str] = []

    async def handler(peer: str, stream: Stream) -> None:
        ran.append(peer)
        raise ProtocolViolation("a bad first message", slug="bad_frame")

    async def main() -> None:
        server = await quic.listen(HOST, 0, Identity.generate(), handler)
        conn = await quic.connect(HOST, server.port, Identity.generate())
        try:
            await eventually(lambda: len(server._ep.protocols) == 1)
            (proto,) = server._ep.protocols
            await eventually(lambda: proto.ready.done() and proto.peer_id is not None)
            proto._on_stream_data(4, b"x", False)  # both arrive in one datagram
            proto._on_stream_data(8, b"y", False)
            assert server._ep.active_streams == 2
            await eventually(lambda: server.connection_count == 0)
            await eventually(lambda: server._ep.active_streams == 0, timeout=5)
            assert dict(server._ep.streams_by_peer) == {}
            assert ran == [proto.peer_id]  # the second handler never ran
        finally:
            await conn.close()
            await server.close()

    run(main())
