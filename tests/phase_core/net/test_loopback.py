"""The QUIC/Noise transport on 127.0.0.1 with real aioquic on both ends."""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import time

import pytest

from phase_core.aio import quic
from phase_core.aio.endpoint import SUMMARY_INTERVAL_S
from phase_core.aio.pool import Pool
from phase_core.aio.stream import Limits, Stream
from phase_core.errors import PhaseError, ProtocolViolation, Timeout, UntrustedSigner
from phase_core.identity import Identity
from tests.phase_core.net.conftest import HOST, LogCapture, eventually, mitm_relay, run


async def echo_handler(peer: str, stream: Stream) -> None:
    """Echo control frames; answer a blob with its SHA-256; send a blob on request."""
    while (msg := await stream.recv()) is not None:
        kind = msg.get("type")
        if kind == "blob":
            data = await stream.recv_blob()
            await stream.send({"type": "digest", "sha256": hashlib.sha256(data).hexdigest(),
                               "n": len(data)})
        elif kind == "give":
            await stream.send({"type": "here"})
            await stream.send_blob(bytes(range(256)) * (msg["n"] // 256))
        elif kind == "whoami":
            await stream.send({"type": "you", "peer": peer})
        else:
            await stream.send({"type": "echo", "msg": msg})


def test_connect_authenticate_exchange_frames_and_blobs() -> None:
    async def main() -> None:
        si, ci = Identity.generate(), Identity.generate()
        server = await quic.listen(HOST, 0, si, echo_handler)
        try:
            conn = await quic.connect(HOST, server.port, ci, expected_node_id=si.node_id)
            assert conn.peer_id == si.node_id
            async with await conn.open_stream() as s:
                await s.send({"type": "whoami"})
                assert await s.recv() == {"type": "you", "peer": ci.node_id}
                await s.send({"type": "ping", "x": [1, "two", None]})
                assert await s.recv() == {"type": "echo", "msg": {"type": "ping",
                                                                 "x": [1, "two", None]}}
                blob = os.urandom(3 << 20)
                await s.send({"type": "blob"})
                await s.send_blob(blob)
                assert await s.recv() == {"type": "digest", "n": len(blob),
                                          "sha256": hashlib.sha256(blob).hexdigest()}
                await s.send({"type": "give", "n": 5 << 20})
                assert await s.recv() == {"type": "here"}
                got = await s.recv_blob()
                assert got == bytes(range(256)) * ((5 << 20) // 256)
                s.finish()
                assert await s.recv() is None  # the server finished its half too
            assert server.peers() == {ci.node_id: 1}
            assert server.stats["connections_authenticated"] == 1
            await conn.close()
        finally:
            await server.close()

    run(main())


def test_many_streams_on_one_connection() -> None:
    async def main() -> None:
        si, ci = Identity.generate(), Identity.generate()
        server = await quic.listen(HOST, 0, si, echo_handler,
                                   Limits(max_streams_per_connection=4))
        try:
            conn = await quic.connect(HOST, server.port, ci)

            async def one(i: int) -> None:
                s = await conn.open_stream()
                await s.send({"type": "n", "i": i})
                assert await s.recv() == {"type": "echo", "msg": {"type": "n", "i": i}}
                s.finish()
                assert await s.recv() is None

            for _ in range(3):  # more streams in total than the concurrency limit, many times
                await asyncio.gather(*(one(i) for i in range(10)))
            assert server.stats["streams_accepted"] == 30
            await conn.close()
        finally:
            await server.close()

    run(main())


def test_stream_concurrency_is_capped_per_connection() -> None:
    async def main() -> None:
        si, ci = Identity.generate(), Identity.generate()
        live, high, release = 0, 0, asyncio.Event()

        async def handler(peer: str, stream: Stream) -> None:
            nonlocal live, high
            live += 1
            high = max(high, live)
            await stream.recv()
            await release.wait()
            live -= 1
            await stream.send({"type": "done"})

        server = await quic.listen(HOST, 0, si, handler, Limits(max_streams_per_connection=3))
        try:
            conn = await quic.connect(HOST, server.port, ci)

            async def one() -> None:
                s = await conn.open_stream()
                await s.send({"type": "go"})
                assert await s.recv() == {"type": "done"}
                s.finish()

            tasks = [asyncio.create_task(one()) for _ in range(8)]
            await eventually(lambda: live == 3)
            for _ in range(20):  # give extra streams every chance to sneak in
                await asyncio.sleep(0.01)
            assert high == 3
            release.set()
            await asyncio.gather(*tasks)
            assert high == 3
            await conn.close()
        finally:
            await server.close()

    run(main())


def test_server_opens_a_stream_back_to_the_client() -> None:
    async def main() -> None:
        si, ci = Identity.generate(), Identity.generate()

        async def server_handler(peer: str, stream: Stream) -> None:
            await stream.recv()
            back = await stream.connection.open_stream()  # e.g. pull a missing blob
            await back.send({"type": "need", "id": "sha256:" + "0" * 64})
            data = await back.recv_blob()
            back.finish()
            await stream.send({"type": "pulled", "n": len(data)})

        async def client_handler(peer: str, stream: Stream) -> None:
            assert peer == si.node_id
            assert (await stream.recv() or {}).get("type") == "need"
            await stream.send_blob(b"m" * 100_000)

        server = await quic.listen(HOST, 0, si, server_handler)
        try:
            conn = await quic.connect(HOST, server.port, ci, handler=client_handler)
            s = await conn.open_stream()
            await s.send({"type": "run"})
            assert await s.recv() == {"type": "pulled", "n": 100_000}
            await conn.close()
        finally:
            await server.close()

    run(main())


def test_expected_node_id_mismatch_is_refused(logs: LogCapture) -> None:
    async def main() -> None:
        si, ci, other = Identity.generate(), Identity.generate(), Identity.generate()
        server = await quic.listen(HOST, 0, si, echo_handler)
        try:
            with pytest.raises(UntrustedSigner) as ei:
                await quic.connect(HOST, server.port, ci, expected_node_id=other.node_id)
            assert ei.value.slug == "wrong_peer"
            await eventually(lambda: server.stats["handshake_aborted"] == 1)
            assert server.peers() == {}
            conn = await quic.connect(HOST, server.port, ci, expected_node_id=si.node_id)
            assert conn.peer_id == si.node_id
            await conn.close()
        finally:
            await server.close()

    run(main())
    assert [r["error"] for r in logs.events("net.peer_dropped")][:1] == ["wrong_peer"]


def test_per_peer_connection_limit() -> None:
    async def main() -> None:
        si, ci = Identity.generate(), Identity.generate()
        server = await quic.listen(HOST, 0, si, echo_handler,
                                   Limits(max_connections_per_peer=2))
        try:
            c1 = await quic.connect(HOST, server.port, ci)
            c2 = await quic.connect(HOST, server.port, ci)
            with pytest.raises(PhaseError):
                await quic.connect(HOST, server.port, ci)
            assert server.stats["refused_per_peer"] == 1
            other = await quic.connect(HOST, server.port, Identity.generate())
            await c1.close()
            await eventually(lambda: server.peers().get(ci.node_id) == 1)
            c3 = await quic.connect(HOST, server.port, ci)
            for c in (c2, c3, other):
                await c.close()
        finally:
            await server.close()

    run(main())


def test_a_peer_that_said_goodbye_frees_its_share_at_once() -> None:
    """A one-shot client closes with close_now() and dials again at once: the server
    stops counting the closed connection when the goodbye arrives, not when its own
    draining period ends, so back-to-back one-shot clients are not refused."""
    async def main() -> None:
        si, ci = Identity.generate(), Identity.generate()
        server = await quic.listen(HOST, 0, si, echo_handler,
                                   Limits(max_connections_per_peer=1))
        try:
            for _ in range(4):
                c = await quic.connect(HOST, server.port, ci)
                s = await c.open_stream()
                await s.send({"n": 1})
                assert (await s.recv())["msg"] == {"n": 1}
                c.close_now()  # and the next one dials at once
            assert server.stats["refused_per_peer"] == 0
        finally:
            await server.close()

    run(main())


def test_pool_reuses_one_connection_per_peer() -> None:
    async def main() -> None:
        si, ci = Identity.generate(), Identity.generate()
        server = await quic.listen(HOST, 0, si, echo_handler)
        pool = Pool(ci)
        try:
            for i in range(5):
                s = await pool.open_stream(HOST, server.port, si.node_id)
                await s.send({"type": "i", "i": i})
                assert (await s.recv() or {})["msg"]["i"] == i
                s.finish()
            assert server.stats["connections_authenticated"] == 1
            assert pool.stats["pool_dials"] == 1
            c = await pool.get(HOST, server.port)  # by address: dials, then indexed by id
            assert c.peer_id == si.node_id
            assert len(pool.connections()) == 2 or pool.stats["pool_dials"] == 2
            # the peer drops us: the pool dials again
            for conn in pool.connections():
                await conn.close()
            s = await pool.open_stream(HOST, server.port, si.node_id)
            await s.send({"type": "again"})
            assert (await s.recv() or {})["type"] == "echo"
        finally:
            await pool.close()
            await server.close()

    run(main())


def test_oversized_frame_drops_that_connection_only(logs: LogCapture) -> None:
    async def main() -> None:
        si = Identity.generate()
        limits = Limits(max_control_bytes=1024)
        server = await quic.listen(HOST, 0, si, echo_handler, limits)
        try:
            bad = await quic.connect(HOST, server.port, Identity.generate())
            good = await quic.connect(HOST, server.port, Identity.generate())
            s = await bad.open_stream()
            await s._ch.write(b"J" + (10_000).to_bytes(4, "big"))  # header only
            s2 = await bad.open_stream()  # more hostile input on the same connection
            await s2._ch.write(b"J" + (1 << 31).to_bytes(4, "big"))
            with pytest.raises(PhaseError):
                await s.recv()
            await eventually(lambda: bad.closed)
            assert server.stats["protocol_violations"] == 1
            g = await good.open_stream()
            await g.send({"type": "still", "there": True})
            assert (await g.recv() or {})["type"] == "echo"
            await good.close()
        finally:
            await server.close()

    run(main())
    dropped = [r for r in logs.events("net.peer_dropped") if r["role"] == "server"]
    assert len(dropped) == 1 and dropped[0]["error"] == "frame_too_large"


def test_garbage_after_handshake_is_logged_once_and_dropped(logs: LogCapture) -> None:
    async def main() -> None:
        si = Identity.generate()
        server = await quic.listen(HOST, 0, si, echo_handler)
        try:
            bad = await quic.connect(HOST, server.port, Identity.generate())
            streams = [await bad.open_stream() for _ in range(5)]
            for s in streams:
                await s._ch.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            await eventually(lambda: bad.closed)
            assert server.stats["protocol_violations"] == 1
            good = await quic.connect(HOST, server.port, Identity.generate())
            g = await good.open_stream()
            await g.send({"type": "ok"})
            assert (await g.recv() or {})["type"] == "echo"
            await good.close()
        finally:
            await server.close()

    run(main())
    dropped = [r for r in logs.events("net.peer_dropped") if r["role"] == "server"]
    assert len(dropped) == 1 and dropped[0]["error"] == "bad_frame"


def test_a_peer_that_stops_reading_is_dropped(logs: LogCapture) -> None:
    async def main() -> None:
        si = Identity.generate()
        started = asyncio.Event()

        async def sleepy(peer: str, stream: Stream) -> None:
            await stream.recv()
            started.set()
            await asyncio.Event().wait()  # never reads again

        limits = Limits(send_timeout_s=0.5, stream_window_bytes=64 << 10,
                        connection_window_bytes=128 << 10, send_buffer_bytes=64 << 10)
        server = await quic.listen(HOST, 0, si, sleepy, limits)
        try:
            conn = await quic.connect(HOST, server.port, Identity.generate(), limits=limits)
            s = await conn.open_stream()
            await s.send({"type": "blob"})
            await started.wait()
            with pytest.raises(Timeout) as ei:
                await s.send_blob(b"z" * (8 << 20))
            assert ei.value.slug == "peer_stalled"
            assert conn.closed
            # the server never buffered more than its windows allow
            proto = next(iter(server._ep.protocols), None)
            if proto is not None:
                assert all(len(ch._buf) <= 64 << 10 for ch in proto._channels.values())
            ok = await quic.connect(HOST, server.port, Identity.generate())
            await ok.close()
        finally:
            await server.close()

    run(main())
    assert len([r for r in logs.events("net.peer_dropped") if r["role"] == "client"]) == 1


def test_server_drops_a_client_that_stops_reading() -> None:
    async def main() -> None:
        si = Identity.generate()
        limits = Limits(send_timeout_s=0.5, stream_window_bytes=64 << 10,
                        connection_window_bytes=128 << 10, send_buffer_bytes=64 << 10)
        server = await quic.listen(HOST, 0, si, echo_handler, limits)
        try:
            conn = await quic.connect(HOST, server.port, Identity.generate(), limits=limits)
            s = await conn.open_stream()
            await s.send({"type": "give", "n": 16 << 20})  # then never read
            await eventually(lambda: server.stats["peer_stalled"] == 1)
            await eventually(lambda: conn.closed)
        finally:
            await server.close()

    run(main())


def test_client_must_present_a_certificate() -> None:
    from aioquic.asyncio.client import connect as raw_connect
    from aioquic.quic.configuration import QuicConfiguration

    async def main() -> None:
        server = await quic.listen(HOST, 0, Identity.generate(), echo_handler)
        try:
            cfg = QuicConfiguration(is_client=True, alpn_protocols=[quic.ALPN],
                                    verify_mode=0, server_name="phase-node")
            async with raw_connect(HOST, server.port, configuration=cfg) as proto:
                await asyncio.wait_for(proto.wait_closed(), 10)
            assert server.stats["handshake_failed"] == 1
        finally:
            await server.close()

    run(main())


def test_mitm_relay_breaks_the_handshake() -> None:
    """A relay terminates QUIC on both sides with its own certificates and forwards bytes."""
    async def main() -> None:
        si, ci = Identity.generate(), Identity.generate()
        server = await quic.listen(HOST, 0, si, echo_handler)
        try:
            async with mitm_relay(server.port) as (relay_port, forwarded):
                with pytest.raises(ProtocolViolation) as ei:
                    await quic.connect(HOST, relay_port, ci, expected_node_id=si.node_id,
                                       limits=Limits(handshake_timeout_s=5))
                assert ei.value.slug == "handshake_failed"
                assert forwarded[0] > 0 and forwarded[1] > 0  # the relay carried the handshake
                assert server.peers() == {}
                assert server.stats["connections_authenticated"] == 0
        finally:
            await server.close()

    run(main())


def test_hundreds_of_abandoned_connections(logs: LogCapture) -> None:
    """220 connections opened and abandoned (TLS only, or fully authenticated), no goodbye."""
    from aioquic.asyncio.protocol import QuicConnectionProtocol
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import QuicConnection

    from phase_core.aio import certs

    async def main() -> None:
        si = Identity.generate()
        limits = Limits(handshake_timeout_s=1.0, idle_timeout_s=2.0, max_connections=150,
                        keepalive_s=0)
        server = await quic.listen(HOST, 0, si, echo_handler, limits)
        loop = asyncio.get_running_loop()
        high = 0

        def watch() -> None:
            nonlocal high
            high = max(high, server.connection_count)


        async def half_open() -> None:
            """TLS completes, then the client vanishes without a word (no Noise)."""
            cfg = QuicConfiguration(is_client=True, alpn_protocols=[quic.ALPN],
                                    verify_mode=0, server_name="phase-node")
            c = certs.make()
            cfg.certificate, cfg.private_key = c.certificate, c.private_key
            conn = QuicConnection(configuration=cfg)
            tr, proto = await loop.create_datagram_endpoint(
                lambda: QuicConnectionProtocol(conn), local_addr=(HOST, 0))
            proto.connect((HOST, server.port))
            try:
                await asyncio.wait_for(proto.wait_connected(), 10)
            except (ConnectionError, TimeoutError):
                pass  # refused as over the limit: also fine
            if proto._timer is not None:
                proto._timer.cancel()
            tr.close()
            watch()

        client = quic.Client(Identity.generate(), limits)

        async def authed_then_gone() -> None:
            try:
                conn = await client.connect(HOST, server.port)
            except PhaseError:
                return  # refused as over the limit
            p = conn._proto
            if p._timer is not None:
                p._timer.cancel()
            conn._transport.close()  # no CONNECTION_CLOSE: a half-open connection
            watch()

        for _batch in range(11):
            jobs = [half_open() for _ in range(15)] + [authed_then_gone() for _ in range(5)]
            await asyncio.gather(*jobs)
            watch()
        assert high <= limits.max_connections
        good = await quic.connect(HOST, server.port, Identity.generate(), limits=limits)
        s = await good.open_stream()
        await s.send({"type": "alive"})
        assert (await s.recv() or {})["type"] == "echo"
        await good.close()
        # every abandoned connection is reaped: nothing is held for them any more
        await eventually(lambda: server.connection_count == 0, timeout=30)
        await eventually(lambda: len(server._server._protocols) == 0, timeout=30)
        # each half-open handshake ends by the handshake timeout, or earlier when a
        # newer one from the same address evicts it (32 per source address)
        assert server.stats["handshake_timeouts"] + server.stats["handshakes_evicted"] >= 100
        assert server.stats["connections_opened"] >= 200
        await server.close()
        return server.stats

    started = time.monotonic()
    stats = run(main(), timeout=120)
    intervals = math.ceil((time.monotonic() - started) / SUMMARY_INTERVAL_S)
    # unauthenticated connections are not logged one by one: the first of an interval
    # is, the others are counted in one summary line per interval (and one at close)
    singles = [r for r in logs.events("net.peer_dropped") if r["role"] == "server"]
    summaries = logs.events("net.handshakes_dropped")
    assert 1 <= len(summaries) <= intervals + 1 and len(singles) <= len(summaries)
    counted: dict[str, int] = {}
    for r in summaries:
        for slug, n in r["counts"].items():
            counted[slug] = counted.get(slug, 0) + n
    for r in singles:
        counted[r["error"]] = counted.get(r["error"], 0) + 1
    assert counted.get("timeout", 0) == stats["handshake_timeouts"]
    assert sum(counted.values()) == (stats["handshake_timeouts"] + stats["handshake_failed"]
                                     + stats["protocol_violations"] + stats["refused_busy"]
                                     + stats["handshakes_evicted"])
