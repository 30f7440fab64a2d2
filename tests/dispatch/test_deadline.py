"""A job's overall deadline (``--job-deadline``) in the scheduler and through
``plasmd dispatch``; a discovered node dialled at its record's next address when
the first does not answer."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
from pathlib import Path
from typing import Any

from phase_core import identity
from plasmd import dispatchsched as ds
from plasmd.dispatchnodes import Nodes
from plasmd.pool import Job
from plasmd.submit import make_manifest
from tests.conftest import script
from tests.dispatch.conftest import records, spin_job, start_workers
from tests.plasmd.conftest import HELLO
from tests.records import check_stdout

A = ("exited", 0, "sha256:" + "a" * 64, "sha256:" + "e" * 64)


def test_the_scheduler_fails_a_job_past_its_deadline_with_its_attempts() -> None:
    s = ds.Scheduler(deadline_s=10, max_attempts=5)
    for i in range(2):
        s.add_node(f"n{i}", f"10.0.0.{i}", capacity=4)
    s.add_job(0, "j0", {}, now=100)
    s.add_job(1, "j1", {}, now=105)
    [p0, p1] = [e for e in s.placements(100) if isinstance(e, ds.Place)]
    assert s.next_deadline() == 110
    s.on_failure(0, p0.node, ds.NODE_FAULT, "timeout", 101)
    [retry] = s.placements(101)  # retried on the other node
    assert isinstance(retry, ds.Place) and retry.node != p0.node
    assert not s.expire(109.9)
    ev = s.placements(110)
    failed = [e for e in ev if isinstance(e, ds.Failed)]
    assert [(e.index, e.slug) for e in failed] == [(0, "deadline")]
    assert failed[0].errors[0] == (p0.node, "timeout")
    assert failed[0].errors[1] == (retry.node, "deadline")  # still running: cut
    assert "10 s" in failed[0].message and not any(isinstance(e, ds.Place) for e in ev)
    # the cut attempt ends: the job is retired; the other job is untouched
    again = s.on_failure(0, retry.node, ds.REFUSED, "deadline", 110)
    assert again == [ds.Retired(0)] and s.next_deadline() == 115
    ok = s.on_result(1, p1.node, A, 1.0, 111)
    assert isinstance(ok[0], ds.Accepted) and s.live == 0 and s.next_deadline() is None


def test_no_deadline_by_default() -> None:
    s = ds.Scheduler()
    s.add_node("n0", "10.0.0.1")
    s.add_job(0, "j0", {}, now=0)
    assert s.next_deadline() is None and not s.expire(1e12)


def test_dispatch_ends_a_job_at_its_deadline_exit_75(tmp_path: Path, client_home: Path,
                                                     stop_all: list[Any]) -> None:
    nodes = start_workers(tmp_path, 1)
    stop_all.extend(nodes)
    line = spin_job(client_home, wall_ms=600_000)
    # each attempt may take 10 minutes: only the job's deadline ends it
    r = subprocess.run([script("plasmd"), "dispatch", f"--home={client_home}",
                        f"--peer={nodes[0].peer}", "--job-deadline=3s"],
                       input=line + "\n", capture_output=True, text=True, timeout=240)
    assert r.returncode == 75, r.stderr[-2000:]
    check_stdout(r.stdout)
    [rec] = records(r.stdout)
    assert rec["type"] == "error" and rec["error"] == "deadline" and rec["exit_code"] == 75
    assert rec["attempts"] == [{"node": nodes[0].node_id, "error": "deadline"}]
    assert "--job-deadline" in rec["message"]


def test_dispatch_rejects_a_bad_deadline(client_home: Path) -> None:
    r = subprocess.run([script("plasmd"), "dispatch", f"--home={client_home}",
                        "--peer=127.0.0.1:9", "--job-deadline=soon"],
                       input="", capture_output=True, text=True, timeout=60)
    assert r.returncode == 64, r.stderr


def closed_port() -> int:
    """A UDP port on 127.0.0.1 that nothing listens on (bound, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_discovered_node_is_dialled_at_its_next_address(
        tmp_path: Path, client_home: Path, stop_all: list[Any], capfd: Any) -> None:
    [w] = start_workers(tmp_path, 1)
    stop_all.append(w)
    dead, real = f"127.0.0.1:{closed_port()}", f"127.0.0.1:{w.port}"
    rec = {"node_id": w.node_id, "addresses": [dead, real], "capabilities": {}}
    me = identity.load(client_home / "key")
    env = make_manifest(me, HELLO.read_bytes(), None, argv=["hello.wasm", "next"])
    added: list[tuple[str, str]] = []

    async def go() -> Any:
        nodes = Nodes(me, on_node=lambda node_id, _host, address, _cap, _caps:
                      added.append((node_id, address)))
        try:
            got = await nodes.add_record(rec, timeout_s=5)
            assert got == w.node_id
            return await nodes.run(w.node_id, Job(env, {env["body"]["module"]:
                                                       HELLO.read_bytes()}), 60)
        finally:
            await nodes.close()

    out = asyncio.run(go())
    assert added == [(w.node_id, real)]
    assert out.body["ended"] == "exited" and out.body["exit_code"] == 0
    logs = [json.loads(x) for x in capfd.readouterr().err.splitlines() if x.startswith("{")]
    tried = [x["peer"] for x in logs if x["event"] == "dispatch.peer_unreachable"]
    assert tried == [f"{w.node_id}@{dead}"]  # the first address was tried, and failed


def test_a_node_whose_addresses_all_fail_is_not_added(client_home: Path) -> None:
    me = identity.load(client_home / "key")
    rec = {"node_id": "ab" * 32, "addresses": [f"127.0.0.1:{closed_port()}",
                                               f"127.0.0.1:{closed_port()}"]}
    added: list[Any] = []

    async def go() -> Any:
        nodes = Nodes(me, on_node=lambda *a: added.append(a))
        try:
            return await nodes.add_record(rec, timeout_s=2)
        finally:
            await nodes.close()

    assert asyncio.run(go()) is None and not added
