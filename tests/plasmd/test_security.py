"""plasmd under attack: real worker processes on 127.0.0.1, hostile peers in this process.

Each test starts real ``plasmd start`` processes (``node_factory``) and attacks them
with the transport library (or raw aioquic where the attacker must break the rules
the library enforces). Proof that nothing ran comes from the worker itself: the
counters in ``plasmd status`` and the JSON lines it logs on stderr.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import os
import random
from pathlib import Path
from typing import Any

import pytest

from phase_core import envelope
from phase_core import identity as identities
from phase_core.aio import certs, quic
from phase_core.aio.stream import Limits, Stream
from phase_core.errors import DigestMismatch, PhaseError, Rejected
from phase_core.identity import Identity
from phase_core.protocol import jobs
from phase_core.trust import format_entry
from plasmd import control
from plasmd import submit as sub
from plasmd.blobs import serve_get
from tests.conftest import script
from tests.phase_core.net.conftest import (
    HOST,
    LogCapture,
    close_raw,
    eventually,
    mitm_relay,
    run,
    tls_only,
)
from tests.plasmd.conftest import EXAMPLES, HELLO, NodeProc, init_home, submit

HELLO_BYTES = HELLO.read_bytes()
WC_BYTES = (EXAMPLES / "wc.wasm").read_bytes()
LIMITS = {"memory_bytes": 64 << 20, "fuel": 10**9, "wall_ms": 10_000, "output_bytes": 8 << 20}


# -- helpers ---------------------------------------------------------------------------

def status(w: NodeProc) -> dict[str, Any]:
    return control.query_home(w.home)


def counters(w: NodeProc) -> dict[str, int]:
    return dict(status(w)["counters"])


def vmrss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def dropped(w: NodeProc) -> list[dict[str, Any]]:
    """The worker's ``net.peer_dropped`` log lines (one per dropped connection)."""
    return [e for e in w.logs() if e.get("event") == "net.peer_dropped" and e["role"] == "server"]


def drop_counts(w: NodeProc) -> dict[str, int]:
    """Dropped connections by reason, from the worker's log: one ``net.peer_dropped`` line
    each, except unauthenticated ones, which are also counted in ``net.handshakes_dropped``
    summary lines."""
    out: dict[str, int] = {}
    for e in w.logs():
        if e.get("event") == "net.peer_dropped" and e["role"] == "server":
            out[e["error"]] = out.get(e["error"], 0) + 1
        elif e.get("event") == "net.handshakes_dropped":
            for slug, n in e["counts"].items():
                out[slug] = out.get(slug, 0) + n
    return out


def about(w: NodeProc, peer: str) -> list[dict[str, Any]]:
    """Every log line the worker wrote that names ``peer``."""
    return [e for e in w.logs() if e.get("peer") == peer]


def seeded_identity(rng: random.Random) -> Identity:
    return Identity(rng.randbytes(32))


def hello_job(ident: Identity, rng: random.Random, stdin: bytes,
              module: bytes = HELLO_BYTES) -> tuple[dict[str, Any], dict[str, bytes]]:
    """A signed manifest for ``module`` on ``stdin`` (seeded nonce) and its blobs."""
    env = sub.make_manifest(ident, module, stdin, argv=["hello.wasm"], limits=LIMITS,
                            nonce=rng.randbytes(16).hex())
    return env, {env["body"]["module"]: module, env["body"]["stdin"]: stdin}


class BlobServer:
    """A submitter's stream handler that serves ``blobs`` and records every ``get``."""

    def __init__(self, blobs: dict[str, bytes]) -> None:
        self.blobs = blobs
        self.gets: list[str] = []

    async def __call__(self, peer: str, stream: Stream) -> None:
        msg = await stream.recv()
        if msg is not None and msg.get("type") == "get":
            self.gets.append(msg["id"])
            await serve_get(stream, msg, self.blobs.get)


def trust_submitter(home: Path, name: str, key: str) -> None:
    with open(home / "keyring.toml", "a") as f:
        f.write(format_entry(name, key, ["job-submitter"]))


async def plasmd_submit(client_home: Path, peer: str, *args: str, stdin: bytes | None = None,
                        timeout: float = 60) -> tuple[int, bytes, bytes]:
    """``plasmd submit`` as a child process, awaited without blocking this event loop."""
    extra = []
    if stdin is not None:
        f = client_home.parent / f"stdin-{hashlib.sha256(stdin).hexdigest()[:12]}"
        f.write_bytes(stdin)
        extra.append(f"--stdin={f}")
    proc = await asyncio.create_subprocess_exec(
        script("plasmd"), "submit", f"--home={client_home}", str(HELLO), f"--peer={peer}",
        *extra, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out, err


# -- man in the middle -------------------------------------------------------------------

def test_mitm_relay_breaks_the_handshake_and_no_job_runs(node_factory, tmp_path):
    w = node_factory("worker", "--open")
    client = tmp_path / "client"
    init_home(client)

    async def main() -> tuple[list[tuple[int, bytes, bytes]], list[int]]:
        results = []
        async with mitm_relay(w.port) as (relay_port, forwarded):
            # with the worker's id pinned, and without (trust on first use)
            for peer in (f"{w.node_id}@{HOST}:{relay_port}", f"{HOST}:{relay_port}"):
                results.append(await plasmd_submit(client, peer, stdin=b"secret input"))
            return results, list(forwarded)

    results, forwarded = run(main())
    assert forwarded[0] > 0 and forwarded[1] > 0  # the relay did carry the handshake
    for rc, out, err in results:
        assert rc == 76, err  # the node broke the protocol
        assert b"handshake_failed" in err and out == b""
    st = status(w)
    assert st["counters"].get("wasm_runs", 0) == 0
    assert st["counters"].get("blobs_fetched", 0) == 0
    assert st["transport"].get("connections_authenticated", 0) == 0
    assert st["peers"] == {}
    # the direct path still works: the failure was the relay, not the worker
    r = submit(client, w.peer, HELLO, stdin=b"abc", tmp=tmp_path)
    assert r.returncode == 0 and r.stdout == b"cba", r.stderr


# -- identities ---------------------------------------------------------------------------

def test_a_worker_answering_for_another_node_id_is_refused(node_factory, tmp_path):
    a = node_factory("a", "--open")
    b = node_factory("b", "--open")
    client = tmp_path / "client"
    r = submit(client, f"{a.node_id}@{HOST}:{b.port}", HELLO, stdin=b"for a only", tmp=tmp_path)
    assert r.returncode not in (0, 70)
    assert b"wrong_peer" in r.stderr and r.stdout == b""
    for n in (a, b):
        c = counters(n)
        assert c.get("wasm_runs", 0) == 0 and c.get("blobs_fetched", 0) == 0
    assert status(b)["transport"].get("connections_authenticated", 0) == 0
    r = submit(client, a.peer, HELLO, stdin=b"ok", tmp=tmp_path)
    assert r.returncode == 0 and r.stdout == b"ko", r.stderr


def test_a_client_claiming_a_trusted_node_id_without_its_key_is_refused(node_factory, tmp_path):
    rng = random.Random(11)
    victim = seeded_identity(rng)
    home = tmp_path / "worker"
    init_home(home)
    trust_submitter(home, "victim", victim.node_id)
    w = node_factory("worker")  # default deny: only the victim may submit
    impostor = seeded_identity(rng)
    impostor.public, impostor.node_id = victim.public, victim.node_id  # claims, cannot sign

    env, blobs = hello_job(victim, rng, b"run me")  # even holding a manifest the victim signed

    async def attack() -> None:
        await sub.submit(impostor, HOST, w.port, env, blobs, expected_node_id=w.node_id,
                         timeout_s=20)

    with pytest.raises(PhaseError) as ei:
        run(attack())
    assert ei.value.slug == "handshake_failed"
    st = status(w)
    assert st["transport"].get("handshake_failed", 0) == 1
    assert st["transport"].get("connections_authenticated", 0) == 0
    assert st["peers"] == {}
    assert st["counters"].get("wasm_runs", 0) == 0
    drops = dropped(w)
    assert len(drops) == 1 and drops[0]["error"] == "bad_signature"
    assert drops[0]["peer"] == "unauthenticated"
    # the real owner of the key gets the very same job run
    out = run(sub.submit(victim, HOST, w.port, env, blobs, expected_node_id=w.node_id))
    assert out.stdout == b"em nur"


@pytest.mark.parametrize("open_mode", [False, True], ids=["keyring", "open"])
def test_a_manifest_signed_by_another_submitter_is_not_authorized(node_factory, tmp_path,
                                                                   open_mode):
    """The peer on the connection must be the manifest's signer. A stolen manifest of a
    trusted submitter, sent by someone else, is refused (at ``offer`` when the keyring does
    not list the sender, at ``run`` on an open node) and burns nothing."""
    rng = random.Random(12)
    owner, thief = seeded_identity(rng), seeded_identity(rng)
    home = tmp_path / "worker"
    init_home(home)
    trust_submitter(home, "owner", owner.node_id)
    w = node_factory("worker", *(["--open"] if open_mode else []))
    env, blobs = hello_job(owner, rng, b"the owner's input")
    served = BlobServer(blobs)

    async def steal() -> None:
        await sub.submit(thief, HOST, w.port, env, blobs, expected_node_id=w.node_id,
                         timeout_s=20, client=quic.Client(thief, handler=served))

    with pytest.raises(Rejected) as ei:
        run(steal())
    assert ei.value.slug == "not_authorized"
    assert served.gets == []  # the worker never asked the thief for a blob
    c = counters(w)
    assert c.get("wasm_runs", 0) == 0 and c.get("blobs_fetched", 0) == 0
    assert c["unauthorized"] == 1 and c["rejected_not_authorized"] == 1
    assert c.get("replays", 0) == 0
    # the attempt did not burn the job id: its owner can still run it
    out = run(sub.submit(owner, HOST, w.port, env, blobs, expected_node_id=w.node_id))
    assert out.stdout == b"tupni s'renwo eht"


# -- replay ------------------------------------------------------------------------------

def test_a_replayed_run_is_rejected_also_after_a_restart(node_factory, tmp_path):
    rng = random.Random(13)
    ident = seeded_identity(rng)
    w = node_factory("worker", "--open")
    env, blobs = hello_job(ident, rng, b"once only")

    def send(node: NodeProc) -> sub.Outcome:
        # each call dials a new connection with a new certificate and Noise key
        return run(sub.submit(ident, HOST, node.port, env, blobs, expected_node_id=node.node_id,
                              timeout_s=20))

    assert send(w).stdout == b"ylno ecno"
    with pytest.raises(Rejected) as ei:
        send(w)
    assert ei.value.slug == "replay"
    c = counters(w)
    assert c["wasm_runs"] == 1 and c["replays"] == 1 and c["jobs_done"] == 1
    assert w.stop() == 0
    w2 = node_factory("worker", "--open")  # the same home: the replay memory is on disk
    assert w2.node_id == w.node_id and w2.port
    with pytest.raises(Rejected) as ei:
        send(w2)
    assert ei.value.slug == "replay"
    c = counters(w2)
    assert c.get("wasm_runs", 0) == 0 and c["replays"] == 1
    # a new manifest for the same module and input is a new job
    env2, _ = hello_job(ident, rng, b"once only")
    out = run(sub.submit(ident, HOST, w2.port, env2, blobs, expected_node_id=w2.node_id))
    assert out.stdout == b"ylno ecno"
    # the replay memory is bounded in time: a manifest valid for longer than the window
    # the worker remembers job ids for is refused, not run
    long_lived = sub.make_manifest(ident, HELLO_BYTES, b"once only", argv=["hello.wasm"],
                                   limits=LIMITS, nonce=rng.randbytes(16).hex(),
                                   lifetime_s=8 * 24 * 3600)
    with pytest.raises(Rejected) as ei:
        run(sub.submit(ident, HOST, w2.port, long_lived, blobs, expected_node_id=w2.node_id))
    assert ei.value.slug in ("replay", "invalid_request")
    assert counters(w2)["wasm_runs"] == 1


def test_a_replayed_receipt_is_rejected_by_the_client(node_factory, tmp_path):
    """``check_outcome`` binds the receipt to the job, the worker and the bytes received."""
    rng = random.Random(14)
    ident = seeded_identity(rng)
    w = node_factory("worker", "--open")
    done = []
    for data in (b"first job", b"second job"):
        env, blobs = hello_job(ident, rng, data)
        done.append((env, envelope.parse(env).id, run(sub.submit(
            ident, HOST, w.port, env, blobs, expected_node_id=w.node_id))))
    (env1, job1, o1), (env2, job2, o2) = done
    check = sub.check_outcome
    check(w.node_id, job1, env1["body"], o1.receipt, o1.stdout, o1.stderr)  # genuine: fine
    check(w.node_id, job2, env2["body"], o2.receipt, o2.stdout, o2.stderr)
    # the old (genuine, same worker) receipt and outputs offered for the new job
    with pytest.raises(DigestMismatch) as ei:
        check(w.node_id, job2, env2["body"], o1.receipt, o1.stdout, o1.stderr)
    assert ei.value.details["field"] == "job"
    # the right receipt with outputs that are not the ones it names
    with pytest.raises(DigestMismatch) as ei:
        check(w.node_id, job2, env2["body"], o2.receipt, o1.stdout, o2.stderr)
    assert ei.value.details["field"] == "stdout"
    with pytest.raises(DigestMismatch) as ei:
        check(w.node_id, job2, env2["body"], o2.receipt, o2.stdout, b"extra")
    assert ei.value.details["field"] == "stderr"
    with pytest.raises(DigestMismatch):
        check(w.node_id, job2, env2["body"], o2.receipt, o2.stdout[:-1], o2.stderr)
    # a receipt edited to match forged output no longer verifies
    forged = copy.deepcopy(o2.receipt)
    forged["body"]["stdout"] = "sha256:" + hashlib.sha256(b"forged").hexdigest()
    forged["body"]["stdout_bytes"] = 6
    with pytest.raises(Rejected) as ei:
        check(w.node_id, job2, env2["body"], forged, b"forged", o2.stderr)
    assert ei.value.slug == "bad_signature"
    # a genuine receipt from the worker, presented as coming from another node
    other = seeded_identity(rng).node_id
    with pytest.raises(Rejected):
        check(other, job2, env2["body"], o2.receipt, o2.stdout, o2.stderr)


def test_plasmd_submit_rejects_an_old_receipt_from_a_replaying_worker(node_factory, tmp_path):
    """The worker's own key, answering a new job with the receipt of an earlier one."""
    w = node_factory("worker", "--open")
    client = tmp_path / "client"
    r = submit(client, w.peer, HELLO, "--receipt", str(tmp_path / "old.json"), stdin=b"old",
               tmp=tmp_path)
    assert r.returncode == 0 and r.stdout == b"dlo", r.stderr
    old = json.loads((tmp_path / "old.json").read_text())
    assert w.stop() == 0
    key = identities.load(w.home / "key")
    answered = []

    async def replaying_worker(peer: str, stream: Stream) -> None:
        offer = jobs.check(await stream.recv(), "offer")
        await stream.send({"type": "accept", "job": offer["job"]})
        jobs.check(await stream.recv(), "run")
        await stream.send({"type": "result", "job": offer["job"], "receipt": old})
        await stream.send_blob(b"dlo")
        await stream.send_blob(b"")
        answered.append(offer["job"])

    async def main() -> tuple[int, bytes, bytes]:
        server = await quic.listen(HOST, 0, key, replaying_worker)
        try:
            return await plasmd_submit(client, f"{key.node_id}@{HOST}:{server.port}",
                                       stdin=b"new")
        finally:
            await server.close()

    rc, out, err = run(main())
    assert len(answered) == 1 and answered[0] != old["body"]["job"]
    assert rc == 1 and out == b""  # nothing of the old job's output is reported
    assert b"wrong_job" in err and b"receipt's job" in err


# -- admission -----------------------------------------------------------------------------

def test_an_unauthorized_submitter_is_rejected_before_any_fetch_or_run(node_factory, tmp_path):
    rng = random.Random(15)
    stranger = seeded_identity(rng)
    w = node_factory("worker")  # default deny, empty keyring
    env, blobs = hello_job(stranger, rng, rng.randbytes(4096))
    served = BlobServer(blobs)

    async def main() -> None:
        client = quic.Client(stranger, handler=served)
        with pytest.raises(Rejected) as ei:
            await sub.submit(stranger, HOST, w.port, env, blobs, expected_node_id=w.node_id,
                             timeout_s=20, client=client)
        assert ei.value.slug == "not_authorized"
        # skipping the offer and sending the run straight away is a protocol violation
        conn = await client.connect(HOST, w.port, expected_node_id=w.node_id)
        s = await conn.open_stream()
        await s.send({"type": "run", "manifest": env})
        with pytest.raises(PhaseError):
            await asyncio.wait_for(s.recv(), 10)
        await eventually(lambda: conn.closed)

    run(main())
    assert served.gets == []
    st = status(w)
    c = st["counters"]
    assert c.get("wasm_runs", 0) == 0 and c.get("blobs_fetched", 0) == 0
    assert c["unauthorized"] == 1 and c["bad_requests"] == 1
    assert st["cache"]["blobs"] == 0 and st["receipts"] == 0
    assert [e["error"] for e in dropped(w)] == ["unexpected_message"]


def test_a_submitter_serving_the_wrong_bytes_runs_nothing(node_factory, tmp_path):
    """The worker hashes what it pulls: bytes that do not match the id never run or stay."""
    rng = random.Random(16)
    ident = seeded_identity(rng)
    w = node_factory("worker", "--open")
    env, blobs = hello_job(ident, rng, b"honest stdin")
    module_id = env["body"]["module"]
    lying = dict(blobs)
    lying[module_id] = bytes(len(HELLO_BYTES))  # the right size, the wrong bytes
    served = BlobServer(lying)

    with pytest.raises(Rejected) as ei:
        run(sub.submit(ident, HOST, w.port, env, blobs, expected_node_id=w.node_id,
                       timeout_s=20, client=quic.Client(ident, handler=served)))
    assert ei.value.slug == "digest_mismatch"
    assert module_id in served.gets
    st = status(w)
    assert st["counters"].get("wasm_runs", 0) == 0 and st["counters"]["jobs_failed"] == 1
    assert st["cache"]["blobs"] == 0  # the bad bytes were not kept


def test_a_stalled_submitter_does_not_hold_a_queue_slot_for_ever(node_factory, tmp_path):
    rng = random.Random(17)
    home = tmp_path / "worker"
    init_home(home)
    cfg = (home / "config.toml").read_text()
    (home / "config.toml").write_text(cfg.replace("queue = 64", "queue = 1"))
    w = node_factory("worker", "--open", "--workers=1")  # two slots in all
    attacker, honest = seeded_identity(rng), seeded_identity(rng)

    async def never_answer(peer: str, stream: Stream) -> None:
        await stream.recv()  # the worker's `get`: never answered
        await asyncio.Event().wait()

    async def main() -> float:
        conn = await quic.Client(attacker, handler=never_answer).connect(
            HOST, w.port, expected_node_id=w.node_id)
        try:
            return await stall_and_retry(conn)
        finally:
            await conn.close()  # lets the worker drain and stop promptly

    async def stall_and_retry(conn: quic.Connection) -> float:
        loop = asyncio.get_running_loop()
        # slot 1: accepted, then the run never comes
        env1, _ = hello_job(attacker, rng, b"1")
        s1 = await conn.open_stream()
        await s1.send(jobs.offer_for(env1, envelope.parse(env1).id, len(HELLO_BYTES), 1))
        assert (await s1.recv() or {}).get("type") == "accept"
        # slot 2: run sent, then the blob the worker asks for never comes
        env2, _ = hello_job(attacker, rng, b"2")
        s2 = await conn.open_stream()
        await s2.send(jobs.offer_for(env2, envelope.parse(env2).id, len(HELLO_BYTES), 1))
        assert (await s2.recv() or {}).get("type") == "accept"
        await s2.send({"type": "run", "manifest": env2})
        await eventually(lambda: status(w)["jobs"]["queued"] == 2)
        stalled_at = loop.time()
        while True:  # an honest submitter retries while the node says queue_full
            env, blobs = hello_job(honest, rng, b"honest")
            try:
                out = await sub.submit(honest, HOST, w.port, env, blobs,
                                       expected_node_id=w.node_id, timeout_s=20)
                assert out.stdout == b"tsenoh"
                return loop.time() - stalled_at
            except PhaseError as e:
                assert e.slug == "queue_full", e
            assert loop.time() - stalled_at < 15, "the stalled submitter still holds the queue"
            await asyncio.sleep(0.5)

    run(main())


# -- transport abuse -------------------------------------------------------------------------

async def half_open(port: int, cert: Any, source: str = "127.0.0.2") -> None:
    """TLS completes, then this client vanishes without a word (no Noise, no close).
    From another loopback address than the honest client's: the worker limits how many
    handshakes one address holds (evicting its oldest)."""
    try:
        close_raw(await tls_only(port, cert, local_host=source))
    except ConnectionError:
        pass  # evicted by a newer handshake from the same address


async def authenticated_then_gone(port: int, ident: Identity) -> None:
    """A full Noise handshake, then the socket is closed without a CONNECTION_CLOSE."""
    conn = await quic.connect(HOST, port, ident)
    p = conn._proto
    if p._timer is not None:
        p._timer.cancel()
    if p._keepalive is not None:
        p._keepalive.cancel()
    assert conn._transport is not None
    conn._transport.close()


def test_transport_abuse_is_contained_counted_and_logged_once(node_factory, tmp_path):
    """Oversized frames, garbage after the handshake, an unknown request, a peer that stops
    reading, 1000 connections opened and abandoned — against one real worker, while an
    honest ``plasmd submit`` keeps being served."""
    rng = random.Random(18)
    w = node_factory("worker", "--open")
    client = tmp_path / "client"
    init_home(client)
    honest = seeded_identity(rng)
    oversize, garbage, unknown, sleepy = (seeded_identity(rng) for _ in range(4))
    n_half, n_authed = 950, 50  # 1000 abandoned: under the worker's 1024-connection cap
    big = rng.randbytes(3 << 20)

    async def main() -> dict[str, Any]:
        # an honest job whose 3 MiB stdin stays in the worker's store (for the sleepy reader)
        env, blobs = hello_job(honest, rng, big, module=WC_BYTES)
        out = await sub.submit(honest, HOST, w.port, env, blobs, expected_node_id=w.node_id)
        assert out.stdout.split()[-1] == str(len(big)).encode()
        rss0 = vmrss_kib(w.proc.pid)

        # a peer that asks for the blob and then never reads (a blob larger than the
        # worker's send buffer and one chunk, so that the worker's writer has to wait)
        small = Limits(stream_window_bytes=64 << 10, connection_window_bytes=128 << 10)
        sc = await quic.connect(HOST, w.port, sleepy, expected_node_id=w.node_id, limits=small)
        s = await sc.open_stream()
        await s.send({"type": "get", "id": env["body"]["stdin"]})
        s.finish()

        # an oversized frame header (2 GiB announced), then more on a second stream
        bad = await quic.connect(HOST, w.port, oversize, expected_node_id=w.node_id)
        s1, s2 = await bad.open_stream(), await bad.open_stream()
        await s1._ch.write(b"J" + (1 << 31).to_bytes(4, "big"))
        await s2._ch.write(b"J" + (70_000).to_bytes(4, "big") + b"{" * 1000)
        # garbage after the handshake, on five streams of one connection
        junk = await quic.connect(HOST, w.port, garbage, expected_node_id=w.node_id)
        for _ in range(5):
            js = await junk.open_stream()
            await js._ch.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + rng.randbytes(512))
        # a well-formed frame naming no request the node knows
        odd = await quic.connect(HOST, w.port, unknown, expected_node_id=w.node_id)
        os_ = await odd.open_stream()
        await os_.send({"type": "exec", "cmd": "rm -rf /"})
        await eventually(lambda: bad.closed and junk.closed and odd.closed)

        # 1000 connections opened and abandoned, with an honest submit in the middle
        cert = certs.make()
        gone = [seeded_identity(rng) for _ in range(n_authed)]
        opened = 0

        async def abandon() -> None:
            nonlocal opened
            for batch in range(19):  # 50 TLS-only and two or three authenticated at a time
                await asyncio.gather(*(half_open(w.port, cert) for _ in range(n_half // 19)),
                                     *(authenticated_then_gone(w.port, i)
                                       for i in gone[batch::19]))
                opened = batch

        flood = asyncio.create_task(abandon())
        await eventually(lambda: opened >= 5, timeout=60)
        during = await plasmd_submit(client, w.peer, stdin=b"during the flood")
        await flood
        mid = status(w)
        # every half-open connection is evicted or times out (10 s handshake timeout), the
        # sleepy reader is dropped (30 s send timeout); then the honest client is served
        def reaped() -> bool:
            t = status(w)["transport"]
            return (t.get("peer_stalled", 0) == 1 and t.get("handshake_timeouts", 0)
                    + t.get("handshakes_evicted", 0) >= n_half)
        await eventually(reaped, timeout=60)
        after = await plasmd_submit(client, w.peer, stdin=b"after the flood")
        await sc.close()
        return {"rss0": rss0, "rss1": vmrss_kib(w.proc.pid), "during": during,
                "after": after, "mid": mid}

    res = run(main(), timeout=150)
    for rc, _, err in (res["during"], res["after"]):
        assert rc == 0, err
    assert res["during"][1] == b"doolf eht gnirud" and res["after"][1] == b"doolf eht retfa"
    # memory stayed bounded
    assert res["rss1"] - res["rss0"] < 200 << 10, (res["rss0"], res["rss1"])
    st = status(w)
    t = st["transport"]
    assert t["connections_opened"] >= 1000 + 6
    assert res["mid"]["connections"] <= 1024
    assert t["handshake_timeouts"] + t.get("handshakes_evicted", 0) == n_half
    assert t["handshake_timeouts"] >= 32  # what one source may hold at once timed out
    assert t["protocol_violations"] == 3 and t["peer_stalled"] == 1
    assert st["counters"]["bad_requests"] == 1
    assert st["counters"]["wasm_runs"] == 3  # the three honest jobs, nothing else
    # logged once per abuse, not per packet, stream or timer
    for ident, error in ((oversize, "frame_too_large"), (garbage, "bad_frame"),
                         (unknown, "unexpected_message"), (sleepy, "peer_stalled")):
        lines = [e for e in about(w, ident.node_id) if e["level"] != "info"]
        assert [(e["event"], e["error"]) for e in lines] == [("net.peer_dropped", error)], lines
    for ident in (oversize, garbage, unknown):  # (the stalled peer: see the test below)
        assert len(about(w, ident.node_id)) == 1
    total = (t["handshake_timeouts"] + t.get("handshake_failed", 0) + t["protocol_violations"]
             + t["peer_stalled"] + t.get("handshakes_evicted", 0) + t.get("refused_busy", 0))
    run(eventually(lambda: sum(drop_counts(w).values()) == total, timeout=30))  # summaries
    counts = drop_counts(w)
    assert counts["timeout"] == t["handshake_timeouts"]
    assert counts.get("evicted", 0) == t.get("handshakes_evicted", 0)
    # logged once per authenticated abuser, and a few summary lines for the rest
    assert len(w.stderr_path.read_text().splitlines()) < 200
    assert os.path.exists(f"/proc/{w.proc.pid}")


def test_peers_that_stop_reading_many_blobs_do_not_pin_worker_memory(node_factory, tmp_path):
    """``get`` needs no authorization. Four identities, two connections each, sixty streams
    per connection, each asking for a 2 MiB blob and never reading: the worker's memory must
    stay bounded (per connection and overall), not grow by the sum of what was asked."""
    rng = random.Random(19)
    w = node_factory("worker", "--open")
    honest = seeded_identity(rng)
    blob = rng.randbytes(2 << 20)

    async def main() -> tuple[int, int]:
        env, blobs = hello_job(honest, rng, blob, module=WC_BYTES)
        await sub.submit(honest, HOST, w.port, env, blobs, expected_node_id=w.node_id)
        rss0 = vmrss_kib(w.proc.pid)
        tiny = Limits(stream_window_bytes=16 << 10, connection_window_bytes=16 << 10)
        conns = []
        try:
            for _ in range(4):  # two connections each: the share of a peer outside the keyring
                ident = seeded_identity(rng)
                for _ in range(2):
                    c = await quic.connect(HOST, w.port, ident, expected_node_id=w.node_id,
                                           limits=tiny)
                    conns.append(c)
                    for _ in range(60):
                        s = await c.open_stream()
                        await s.send({"type": "get", "id": env["body"]["stdin"]})
                        s.finish()
            # the worker has answered (or refused) every request it will take
            await eventually(lambda: status(w)["transport"]["streams_accepted"]
                             + status(w)["transport"].get("streams_refused", 0) >= 480 + 1,
                             timeout=30)
            await asyncio.sleep(1)
            return rss0, vmrss_kib(w.proc.pid)
        finally:
            await asyncio.gather(*(c.close() for c in conns))

    rss0, rss1 = run(main(), timeout=90)
    assert rss1 - rss0 < 200 << 10, f"worker RSS grew from {rss0 >> 10} to {rss1 >> 10} MiB"


def test_a_peer_that_stops_reading_is_logged_once(tmp_path, monkeypatch):
    """In process (a real Node on the real transport) only to shorten the send timeout:
    the real worker's 30 s is exercised by the abuse test above."""
    from phase_core import log
    from phase_core.cas import ContentStore
    from phase_core.state import StateStore
    from phase_core.trust import Keyring
    from plasmd.config import Config
    from plasmd.memlog import MemoryReceiptLog
    from plasmd.node import Node

    cap = LogCapture()
    monkeypatch.setattr(log.get(), "_stream", cap.buf)
    monkeypatch.setattr(log.get(), "threshold", log.LEVELS["info"])
    rng = random.Random(20)
    ident, sleepy = seeded_identity(rng), seeded_identity(rng)

    async def main() -> dict[str, int]:
        node = Node(identity=ident, config=Config(open=True), keyring=Keyring(),
                    cas=ContentStore(tmp_path / "cas"), state=StateStore(None),
                    receipts=MemoryReceiptLog(), home=tmp_path)
        cid = node.cas.put_bytes(rng.randbytes(4 << 20))
        server = await quic.listen(HOST, 0, ident, node.handle, Limits(send_timeout_s=0.5))
        try:
            c = await quic.connect(HOST, server.port, sleepy, limits=Limits(
                stream_window_bytes=16 << 10, connection_window_bytes=16 << 10))
            s = await c.open_stream()
            await s.send({"type": "get", "id": cid})
            s.finish()
            await eventually(lambda: server.stats["peer_stalled"] == 1)
            await eventually(lambda: c.closed)
            await asyncio.sleep(0.2)
            return dict(server.stats)
        finally:
            await server.close()

    stats = run(main())
    assert stats["peer_stalled"] == 1
    lines = [json.loads(x) for x in cap.buf.getvalue().splitlines()]
    about_sleepy = [e for e in lines if e.get("peer") == sleepy.node_id]
    assert [e["event"] for e in about_sleepy] == ["net.peer_dropped"], about_sleepy
