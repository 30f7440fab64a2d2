"""Hostile DHT peers: odd records, odd error strings, reflection, crashing upkeep.

The sans-I/O parts are called directly; the adapter (``aio.dht.DhtService``) runs
over the real transport on 127.0.0.1 against a hostile peer in this process.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from phase_core import envelope, records
from phase_core.aio import quic
from phase_core.aio.dht import DhtService
from phase_core.aio.stream import Stream
from phase_core.errors import PhaseError
from phase_core.identity import Identity
from phase_core.protocol import dht_node
from phase_core.protocol.dht import KEY_ANY, Contact, node_key
from phase_core.protocol.dht_node import DIALBACK_BURST, KNOWN_SLUGS, DhtNode, stat_key
from phase_core.protocol.dht_store import Collector, verify_value
from tests.phase_core.dht.test_store import CAPS, NOW, ident, node_rec
from tests.phase_core.net.conftest import HOST, LogCapture, eventually, logs, run

__all__ = ["logs"]  # the fixture


def odd_record(who: Identity, node_id: Any) -> dict[str, Any]:
    """A correctly signed node record whose node_id is not a string."""
    body = records.build(node_id=who.node_id, addresses=["10.0.0.1:4433"], capabilities=CAPS,
                         seq=1, now=NOW - 10)
    body["node_id"] = node_id
    return envelope.sign(records.TYPE, body, [who])


@pytest.mark.parametrize("node_id", [["x"], {"a": 1}, 7, None])
def test_a_record_of_any_shape_is_refused_never_raised(node_id: Any) -> None:
    env = odd_record(ident(3), node_id)
    for key in (KEY_ANY, node_key(ident(3).node_id)):
        with pytest.raises(PhaseError):
            verify_value(env, key, NOW)
    col = Collector(KEY_ANY)
    good = node_rec(ident(4))
    assert [v.body["node_id"] for v in col.add([env, good, [1], "x"], NOW)] == \
        [ident(4).node_id]
    assert sum(col.rejected.values()) == 3
    n = DhtNode(ident(5).node_id)
    r = n.handle(ident(3).node_id, dht_node.put(KEY_ANY, env), NOW)
    assert r.message["type"] == "dht_error"


def test_dial_back_goes_only_to_the_observed_host_and_is_rate_limited() -> None:
    n = DhtNode(ident(61).node_id)
    claims = ["localhost:4433", "127.0.0.1:9", "victim.example:53", "[::1]:4433",
              "10.9.9.9:7"]
    r = n.handle(ident(1).node_id, dht_node.ping(claims), NOW, observed="203.0.113.5:50000")
    assert r.candidate == Contact(ident(1).node_id, ("203.0.113.5:4433", "203.0.113.5:9"))
    # no observed address, no dial-back at all
    assert n.handle(ident(2).node_id, dht_node.ping(claims), NOW).candidate is None
    # one host may ask for DIALBACK_BURST dial-backs, then is limited (other hosts are not)
    got = [n.handle(ident(40 + i).node_id, dht_node.ping(["1.2.3.4:1"]), NOW,
                    observed="198.51.100.9:1").candidate for i in range(20)]
    assert sum(c is not None for c in got) == DIALBACK_BURST
    assert n.stats["dialback_limited"] == 20 - DIALBACK_BURST
    assert n.handle(ident(30).node_id, dht_node.ping(["1.2.3.4:1"]), NOW,
                    observed="198.51.100.10:1").candidate is not None


def test_stats_keys_stay_bounded_whatever_peers_say() -> None:
    assert stat_key("answer", "full") == "answer_full"
    assert stat_key("answer", "x" * 60) == stat_key("answer", ["odd"]) == "answer_other"
    assert all(stat_key("refused", s) == f"refused_{s}" for s in KNOWN_SLUGS)


async def _hostile(handler: Any) -> tuple[quic.Server, Identity]:
    ident_ = Identity.generate()
    server = await quic.listen(HOST, 0, ident_, handler)
    return server, ident_


def test_a_hostile_holder_cannot_crash_a_lookup_or_grow_the_stats() -> None:
    """A peer answers every dht_get with odd records and every request with a new
    error string: the honest record is still found, and the stats stay small."""
    honest_rec = node_rec(ident(7))
    n_err = 0

    async def handler(peer: str, stream: Stream) -> None:
        nonlocal n_err
        msg = await stream.recv()
        assert msg is not None
        if msg["type"] == "dht_get":
            recs = [odd_record(ident(8), ["list"]), odd_record(ident(9), {"o": 1}), honest_rec]
            await stream.send({"type": "dht_value", "key": msg["key"], "records": recs,
                               "more": False, "nodes": []})
        else:
            n_err += 1
            await stream.send({"type": "dht_error", "error": f"err-{n_err}-{'z' * 40}",
                               "message": "no"})

    async def main() -> dict[str, int]:
        server, sid = await _hostile(handler)
        svc = DhtService(Identity.generate(), [], clock=lambda: float(NOW))
        try:
            svc.node.table.seen(Contact(sid.node_id, (f"{HOST}:{server.port}",)), NOW)
            found = await svc.get_records(KEY_ANY)
            assert [v.body["node_id"] for v in found] == [ident(7).node_id]
            for _ in range(20):
                with pytest.raises(PhaseError):
                    await svc._ask(HOST, server.port, sid.node_id, dht_node.ping(), "dht_pong")
            return dict(svc.stats)
        finally:
            await svc.close()
            await server.close()

    stats = run(main())
    assert stats["records_rejected"] == 2
    assert stats["answer_other"] == 20
    assert not any(k.startswith("answer_err") for k in stats)


def test_a_crashing_upkeep_is_logged_and_the_loop_goes_on(logs: LogCapture) -> None:
    async def main() -> dict[str, int]:
        svc = DhtService(Identity.generate(), [])

        async def broken() -> None:
            raise RuntimeError("a bug in the upkeep")
        svc.upkeep = broken  # type: ignore[method-assign]
        svc.start(interval_s=0.01)
        try:
            await eventually(lambda: svc.stats["internal_errors"] >= 3)
            assert svc._upkeep is not None and not svc._upkeep.done()

            async def crash() -> None:
                raise ValueError("a bug in a background task")
            svc._spawn(crash())
            await eventually(lambda: svc.stats["internal_errors"] >= 5)
            return dict(svc.stats)
        finally:
            await svc.close()

    run(main())
    lines = logs.events("dht.internal_error")
    assert {e["where"] for e in lines} >= {"upkeep", "task"}
    assert all("Traceback" in e["traceback"] for e in lines)


def test_a_dialback_is_attempted_only_at_the_observed_address() -> None:
    """A real dht_ping claiming other hosts: the service dials only where it came from."""
    dialled: list[str] = []

    async def main() -> None:
        svc = DhtService(Identity.generate(), [f"{HOST}:1"])
        server = await quic.listen(HOST, 0, svc.identity, lambda p, s: _serve(svc, p, s))
        orig = svc.pool.open_stream

        async def spy(host: str, port: int, node_id: str | None) -> Stream:
            dialled.append(f"{host}:{port}")
            return await orig(host, port, node_id)
        svc.pool.open_stream = spy  # type: ignore[method-assign]
        asker = Identity.generate()
        try:
            conn = await quic.connect(HOST, server.port, asker)
            s = await conn.open_stream()
            await s.send(dht_node.ping(["192.0.2.1:4433", "localhost:4434", "[::1]:4435"]))
            s.finish()
            assert (await s.recv() or {})["type"] == "dht_pong"
            await eventually(lambda: len(dialled) >= 1 and not svc._dialing)
            await conn.close()
        finally:
            await svc.close()
            await server.close()

    run(main())
    assert dialled and all(d.startswith(f"{HOST}:") for d in dialled)
    assert {d.rsplit(":", 1)[1] for d in dialled} <= {"4433", "4434"}


async def _serve(svc: DhtService, peer: str, stream: Stream) -> None:
    msg = await stream.recv()
    if msg is not None:
        await svc.handle(peer, msg, stream)
        await asyncio.sleep(0)
