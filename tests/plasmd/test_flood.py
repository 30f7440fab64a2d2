"""Floods against a real plasmd: a keyring submitter's job still completes.

Three attacks, each against its own ``plasmd start`` process on 127.0.0.1, from
this process: peers outside the keyring holding every stream they can open;
clients that finish TLS, never start Noise and push data on other streams;
garbage QUIC Initial packets. Each test asserts that the honest hello job
completes while the attack is in place and that the worker's RSS grew by less
than a bound derived from the attack's size. Each prints one JSON line with
the numbers (``pytest -s``; they are quoted in docs/threat-model.md).
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
from pathlib import Path
from typing import Any

from phase_core.aio import certs, quic
from phase_core.errors import TempFailure
from plasmd import submit as sub
from tests.phase_core.net.conftest import (
    HOST,
    close_raw,
    eventually,
    garbage_initial,
    run,
    tls_only,
)
from tests.plasmd.conftest import NodeProc, init_home
from tests.plasmd.test_security import (
    hello_job,
    seeded_identity,
    status,
    trust_submitter,
    vmrss_kib,
)

MIB = 1 << 10  # in KiB, as VmRSS is


def keyring_worker(node_factory: Any, tmp_path: Path, key: str) -> NodeProc:
    home = tmp_path / "worker"
    init_home(home)
    trust_submitter(home, "honest", key)
    w: NodeProc = node_factory("worker")
    return w


async def honest_job(w: NodeProc, ident: Any, rng: random.Random, text: bytes) -> bool:
    env, blobs = hello_job(ident, rng, text)
    out = await sub.submit(ident, HOST, w.port, env, blobs, expected_node_id=w.node_id,
                           timeout_s=60)
    assert out.stdout == text[::-1]
    return True


def report(name: str, **numbers: Any) -> None:
    print(json.dumps({"attack": name, **numbers}))


def test_strangers_holding_every_stream_do_not_block_a_keyring_submitter(node_factory,
                                                                         tmp_path):
    """4 fresh keys x 4 connections x 64 streams, one byte on each (the global stream
    cap of 1024): strangers get their share (2 connections, 64 streams each), the
    keyring submitter is served, and the first-message deadline frees the streams."""
    rng = random.Random(41)
    honest = seeded_identity(rng)
    w = keyring_worker(node_factory, tmp_path, honest.node_id)
    keys, conns_each, streams_each = 4, 4, 64

    async def main() -> dict[str, Any]:
        await honest_job(w, honest, rng, b"warm up")
        rss0 = vmrss_kib(w.proc.pid)
        conns, refused = [], 0
        try:
            for _ in range(keys):
                ident = seeded_identity(rng)
                for _ in range(conns_each):
                    try:
                        c = await quic.connect(HOST, w.port, ident, expected_node_id=w.node_id)
                    except TempFailure:
                        refused += 1
                        continue
                    conns.append(c)
                    for _ in range(streams_each):
                        s = await c.open_stream()
                        await s._ch.write(b"J")

            def settled() -> bool:
                t = status(w)["transport"]
                return (t.get("streams_accepted", 0) + t.get("streams_refused", 0)
                        >= streams_each * len(conns) + 1)
            await eventually(settled, timeout=60)
            held = status(w)["transport"]
            done = await honest_job(w, honest, rng, b"during the stream flood")
            rss1 = vmrss_kib(w.proc.pid)
            # the strangers' streams carry no request: each is reset at its deadline
            await eventually(lambda: status(w)["transport"].get("request_timeouts", 0)
                             >= held["streams_accepted"] - 1, timeout=60)
            return {"rss0": rss0, "rss1": rss1, "refused": refused, "conns": len(conns),
                    "held": held, "done": done}
        finally:
            await asyncio.gather(*(c.close() for c in conns))

    r = run(main(), timeout=240)
    accepted = r["held"]["streams_accepted"] - 1  # minus the warm-up job's offer
    report("stream_flood", streams_opened=streams_each * r["conns"],
           connections_refused=r["refused"], strangers_streams_accepted=accepted,
           rss_before_kib=r["rss0"], rss_after_kib=r["rss1"], honest_job_completed=r["done"])
    assert r["done"]
    assert r["refused"] == keys * (conns_each - 2)  # two connections per stranger
    assert accepted <= keys * 64  # 64 streams per stranger, whatever it opens
    # bound: 64 KiB per stream and 1 MiB per connection the attack opened
    assert r["rss1"] - r["rss0"] < keys * conns_each * (streams_each * 64 + MIB)


def test_clients_pushing_data_before_authentication_are_dropped(node_factory, tmp_path):
    """25 clients finish TLS, never start Noise and push 1 MiB on stream 4 each: every
    one is dropped at once and nothing of it is buffered (it was 3.4 MiB each)."""
    rng = random.Random(42)
    honest = seeded_identity(rng)
    w = keyring_worker(node_factory, tmp_path, honest.node_id)
    n, push = 25, 1 << 20

    async def main() -> dict[str, Any]:
        await honest_job(w, honest, rng, b"warm up")
        rss0 = vmrss_kib(w.proc.pid)
        cert = certs.make()
        protos = await asyncio.gather(*(tls_only(w.port, cert, push=b"J" * push)
                                        for _ in range(n)))
        try:
            await eventually(lambda: status(w)["transport"].get("handshake_failed", 0) >= n,
                             timeout=60)
            done = await honest_job(w, honest, rng, b"during the push")
            rss1 = vmrss_kib(w.proc.pid)
            return {"rss0": rss0, "rss1": rss1, "done": done, "st": status(w)}
        finally:
            for p in protos:
                close_raw(p)

    r = run(main(), timeout=180)
    report("push_before_auth", connections=n, bytes_pushed_each=push,
           rss_before_kib=r["rss0"], rss_after_kib=r["rss1"], honest_job_completed=r["done"])
    assert r["done"]
    assert r["st"]["transport"]["handshake_failed"] == n
    # bound: 512 KiB per connection (it was 3.4 MiB each)
    assert r["rss1"] - r["rss0"] < n * 512


def test_garbage_initials_do_not_fill_the_connection_table(node_factory, tmp_path):
    """1500 random 1200-byte Initial packets (spoofable, 1.9 MB): with address
    validation (Retry) none makes a connection; the keyring submitter is served and
    nothing is logged per datagram."""
    rng = random.Random(43)
    honest = seeded_identity(rng)
    w = keyring_worker(node_factory, tmp_path, honest.node_id)
    n = 1500

    async def main() -> dict[str, Any]:
        await honest_job(w, honest, rng, b"warm up")
        rss0 = vmrss_kib(w.proc.pid)
        opened0 = status(w)["transport"]["connections_opened"]
        lines0 = len(w.stderr_path.read_text().splitlines())
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            for i in range(n):
                sock.sendto(garbage_initial(rng), (HOST, w.port))
                if i % 50 == 49:
                    await asyncio.sleep(0.005)  # pacing only: the socket buffer is finite
        done = await honest_job(w, honest, rng, b"during the garbage")
        st = status(w)
        return {"rss0": rss0, "rss1": vmrss_kib(w.proc.pid), "done": done, "st": st,
                "opened": st["transport"]["connections_opened"] - opened0,
                "lines": len(w.stderr_path.read_text().splitlines()) - lines0}

    r = run(main(), timeout=180)
    report("garbage_initials", datagrams=n, bytes=n * 1200, connections_made=r["opened"],
           rss_before_kib=r["rss0"], rss_after_kib=r["rss1"], honest_job_completed=r["done"],
           log_lines=r["lines"])
    assert r["done"]
    assert r["opened"] == 1  # the honest submitter's
    assert r["lines"] < 50  # the honest job's own lines; nothing per datagram
    assert r["rss1"] - r["rss0"] < 8 * MIB
