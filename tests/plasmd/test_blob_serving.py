"""Serving blobs costs one hash per blob, off the event loop: a flood of ``get``
requests for a large published blob does not stall a node's jobs."""

from __future__ import annotations

import asyncio
import random
import subprocess
from pathlib import Path

from phase_core import identity
from phase_core.aio import quic
from phase_core.canonical import content_id
from phase_core.identity import Identity
from phase_core.protocol.jobs_client import Query
from phase_core.trust import format_entry
from phase_fetch.peer import pull
from plasmd import control
from plasmd import submit as sub
from tests.conftest import script
from tests.phase_core.net.conftest import HOST, run
from tests.plasmd.conftest import HELLO, prepare_home, start_node
from tests.plasmd.test_flood import report
from tests.plasmd.test_security import vmrss_kib

BIG = 48 << 20  # a published initramfs
GETS = 64


class Discard:
    def write(self, data: bytes | memoryview) -> None:
        pass


def publish(home: Path, tmp: Path, big: bytes) -> str:
    kernel, initrd = tmp / "vmlinuz", tmp / "initrd.img"
    kernel.write_bytes(b"K" * 4096)
    initrd.write_bytes(big)
    identity.create(tmp / "signer.key")
    r = subprocess.run([script("plasmd"), "boot-sign", f"--home={home}", f"--kernel={kernel}",
                        f"--initramfs={initrd}", f"--key={tmp / 'signer.key'}"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return content_id(big)


def test_many_gets_of_a_large_published_blob_hash_it_once_and_jobs_still_run(tmp_path):
    rng = random.Random(21)
    home = tmp_path / "worker"
    prepare_home(home, mdns=False)  # default deny: only the keyring's submitter runs jobs
    submitter = Identity(rng.randbytes(32))
    (home / "keyring.toml").write_text(
        format_entry("client", submitter.node_id, ["job-submitter"]))
    big_id = publish(home, tmp_path, rng.randbytes(BIG))
    node = start_node(home, init=False)
    try:
        async def stranger_gets(conn: quic.Connection) -> list[int]:
            # an unauthorized peer, asking for the published blob at offset = size:
            # each answer is empty, each request used to cost a full hash on the loop
            return await asyncio.gather(*(
                pull(conn.open_stream, big_id, max_bytes=BIG, writer=Discard(), offset=BIG)
                for _ in range(GETS)))

        async def ping(conn: quic.Connection) -> dict[str, object]:
            q = Query(lambda: 0.0, {"type": "ping", "nonce": "still-there"})
            q.start()
            async with await conn.open_stream() as s:
                for m in q.outbox():
                    await s.send(m)  # type: ignore[arg-type]
                return q.receive(await s.recv())

        async def main() -> tuple[list[int], dict[str, object], bytes]:
            stranger = await quic.connect(HOST, node.port, Identity(rng.randbytes(32)),
                                          expected_node_id=node.node_id)
            mine = await quic.connect(HOST, node.port, submitter,
                                      expected_node_id=node.node_id)
            env = sub.make_manifest(submitter, HELLO.read_bytes(), b"flood",
                                    argv=["hello.wasm"], nonce=rng.randbytes(16).hex())
            blobs = {env["body"]["module"]: HELLO.read_bytes(), env["body"]["stdin"]: b"flood"}
            try:
                gets, pong, out = await asyncio.gather(
                    stranger_gets(stranger), ping(mine),
                    sub.submit(submitter, HOST, node.port, env, blobs,
                               expected_node_id=node.node_id, timeout_s=120))
                return gets, pong, out.stdout
            finally:
                await stranger.close()
                await mine.close()

        rss_before = vmrss_kib(node.proc.pid)
        gets, pong, stdout = run(main(), timeout=300)
        rss_after = vmrss_kib(node.proc.pid)
        report("64 gets of a 48 MiB published blob at offset = size, from a stranger",
               rss_before_mib=round(rss_before / 1024, 1),
               rss_after_mib=round(rss_after / 1024, 1), honest_job="completed")
        # no request buffers the blob: the growth stays well under one copy of it
        assert rss_after - rss_before < (BIG >> 10), (rss_before, rss_after)
        assert gets == [0] * GETS
        assert pong == {"type": "pong", "nonce": "still-there"}
        assert stdout == b"doolf"
        st = control.query_home(home)
        assert st["counters"]["blobs_served"] == GETS
        # one hash for all the requests (and one for the job's stdin, before its run)
        assert st["counters"]["blobs_hashed"] == 2
        assert st["jobs"]["done"] == 1
        # a second round: the verdict is remembered while the file is unchanged
        async def again() -> list[int]:
            c = await quic.connect(HOST, node.port, Identity(rng.randbytes(32)),
                                   expected_node_id=node.node_id)
            try:
                return await stranger_gets(c)
            finally:
                await c.close()
        assert run(again(), timeout=120) == [0] * GETS
        assert control.query_home(home)["counters"]["blobs_hashed"] == 2
    finally:
        node.stop()


def test_the_verdict_is_kept_per_file_identity(tmp_path):
    """Hashed once while the file is unchanged; a file changed since is hashed again,
    and a corrupt one is not served (the store quarantines it)."""
    import os

    from phase_core.cas import ContentStore
    from plasmd.blobs import VerifiedBlobs

    cas = ContentStore(tmp_path / "cas")
    cid = cas.put_bytes(b"a published blob")
    vb = VerifiedBlobs(cas)
    assert vb.known(cid) is None
    assert vb.verify(cid) == cas.path_for(cid) and vb.hashed == 1
    assert vb.known(cid) == cas.path_for(cid)
    assert vb.verify(cid) == cas.path_for(cid) and vb.hashed == 1
    path = cas.path_for(cid)
    os.chmod(path, 0o644)
    path.write_bytes(b"a published blob, edited in place")
    assert vb.known(cid) is None  # size and mtime changed
    assert vb.verify(cid) is None and vb.hashed == 2
    assert not cas.has(cid)
    assert vb.verify(content_id(b"never stored")) is None and vb.hashed == 2


def test_an_old_verdict_is_rechecked_so_a_hot_blob_stays_used(tmp_path):
    """A blob served only from its remembered verdict would keep the mtime of its
    first use, and the store's LRU gc would evict it first. Past
    VERDICT_MAX_AGE_S the verdict is re-checked: re-hashed, and the use stamped."""
    import os

    from phase_core.cas import VERDICT_MAX_AGE_S, ContentStore
    from plasmd.blobs import VerifiedBlobs

    cas = ContentStore(tmp_path / "cas")
    hot = cas.put_bytes(b"the module every job runs")
    now = [0.0]
    vb = VerifiedBlobs(cas, clock=lambda: now[0])
    path = cas.path_for(hot)
    old = os.stat(path).st_mtime_ns - 3600 * 10**9
    os.utime(path, ns=(old, old))  # first used an hour ago
    now[0] = old / 1e9
    assert vb.verify(hot) == path and vb.hashed == 1
    first_use = os.stat(path).st_mtime_ns
    now[0] = first_use / 1e9 + VERDICT_MAX_AGE_S / 2
    assert vb.known(hot) == path  # a recent verdict: no re-hash
    now[0] = first_use / 1e9 + VERDICT_MAX_AGE_S + 1
    assert vb.known(hot) is None
    assert vb.verify(hot) == path and vb.hashed == 2
    assert os.stat(path).st_mtime_ns > old  # the use is stamped for the gc
    cold = cas.put_bytes(b"a blob nobody asked for since")
    os.utime(cas.path_for(cold), ns=(old + 1, old + 1))
    cas_limit = os.stat(path).st_size
    assert cas.gc(cas_limit) == [cold]
