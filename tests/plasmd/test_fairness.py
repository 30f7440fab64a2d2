"""Fairness between submitters on a real node (docs/threat-model.md): a submitter
with a backlog of 40 queued jobs does not make a second submitter wait behind all
of it; the second's job runs after about one of the first's (receipt log order)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from phase_core import identity, manifest
from plasmd import control
from plasmd.receiptlog import ReceiptLog
from plasmd.submit import make_manifest
from tests.conftest import script
from tests.plasmd.conftest import EXAMPLES, HELLO, init_home, submit

SPIN = EXAMPLES / "spin.wasm"
BACKLOG = 40


@pytest.mark.parametrize("warm", [False, True], ids=["fetching", "batch-here"])
def test_second_submitter_does_not_wait_for_the_backlog(tmp_path: Path, node_factory: Any,
                                                        warm: bool) -> None:
    """Not warm: the node fetches A's module, each job goes its own way
    (``Node._job``); warm: the module is here, A's batch runs through
    ``plasmd.batchhere`` (runners that give way)."""
    node = node_factory("worker", "--open", "--workers=1")
    a_home, b_home = tmp_path / "a", tmp_path / "b"
    init_home(a_home)
    a = identity.load(a_home / "key")
    spin = SPIN.read_bytes()
    lines = []
    for i in range(BACKLOG + warm):  # each spins until its fuel is gone: a little while
        env = make_manifest(a, spin, None, argv=["spin.wasm", str(i)],
                            limits=dict(manifest.DEFAULT_LIMITS, fuel=150_000_000))
        lines.append(json.dumps({"v": 1, "type": "job", "manifest": env,
                                 "module_path": str(SPIN)}))
    jobs_file = tmp_path / "a-jobs.jsonl"
    if warm:  # A's first job brings the module
        jobs_file.write_text(lines.pop() + "\n")
        r = subprocess.run([script("plasmd"), "submit", f"--home={a_home}",
                            f"--jobs={jobs_file}", f"--peer={node.peer}"],
                           capture_output=True, timeout=300)
        assert b'"job_result"' in r.stdout, r.stderr.decode()[-2000:]
    # warm: the jobs go in ten chunks, one batch stream each, more batch runners
    # than the node has job threads
    parts = 10 if warm else 1
    base = control.query_home(node.home)["counters"].get("batches", 0)
    proc = subprocess.Popen([script("plasmd"), "submit", f"--home={a_home}", "--jobs=-",
                             f"--peer={node.peer}", f"--max-in-flight={BACKLOG}"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    procs = [proc]
    assert proc.stdin is not None
    for k in range(parts):
        proc.stdin.write(("\n".join(lines[k::parts]) + "\n").encode())
        proc.stdin.flush()
        for _ in range(100_000):  # until the node has that chunk's batch
            if control.query_home(node.home)["counters"].get("batches", 0) > base + k:
                break
        else:
            proc.kill()
            raise AssertionError(f"A's batch never came: {proc.communicate()[1].decode()[-1500:]}")
    proc.stdin.close()
    proc.stdin = None  # (communicate would flush it)
    try:
        for _ in range(100_000):  # until most of A's backlog waits on the node
            jobs = control.query_home(node.home)["jobs"]
            if jobs["queued"] >= BACKLOG // 2:
                break
            for p in procs:
                assert p.poll() is None, p.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
        else:
            raise AssertionError(f"A's jobs never queued: {jobs}")
        r = submit(b_home, node.peer, HELLO, stdin=b"fair", tmp=tmp_path, timeout=300)
        assert r.returncode == 0, r.stderr.decode()[-2000:]
        assert r.stdout == b"riaf"
        outs = [p.communicate(timeout=600) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    results = [json.loads(x) for out, _ in outs for x in out.decode().splitlines()]
    assert sum(x["type"] == "job_result" for x in results) == BACKLOG, \
        [err.decode()[-1000:] for _, err in outs]
    b_id = identity.load(b_home / "key").node_id
    events = [x for x in node.logs() if x["event"] in ("job.done", "fetch.done")]
    # B's job came once its inputs were here (the last fetch from B), then waited
    came = max(i for i, x in enumerate(events) if x["event"] == "fetch.done"
               and x["source"] == f"peer:{b_id[:16]}")
    done = [x["peer"] == b_id for x in events if x["event"] == "job.done"]
    assert len(done) == BACKLOG + 1 + warm and done.count(True) == 1
    ended_before = sum(x["event"] == "job.done" for x in events[:came])
    ahead = done.index(True) - ended_before
    # A's jobs that ended after B's came and before B's: the one running then and
    # about one more, not the rest of A's backlog
    assert 0 <= ahead <= 3, (ended_before, done)
    left = BACKLOG + warm - ended_before  # A's jobs not ended when B's came
    assert left >= 8, "A's backlog was gone before B's job came: no test"
    assert done[done.index(True) + 1:].count(False) >= left - 3, done
    # the receipt log holds every job once, in the order they ran (one worker)
    modules = [e.receipt["body"]["module"] for e in
               ReceiptLog(node.home / "receipts.jsonl").entries()]
    assert len(modules) == BACKLOG + 1 + warm and len(set(modules)) == 2


def test_one_backlog_leaves_the_last_slots_to_another_submitter(tmp_path: Path,
                                                                 node_factory: Any) -> None:
    """Admission (docs/threat-model.md): with 1 worker and the default queue of 64
    (65 slots, the last 2 kept back), A's backlog of 70 is held to 63; B's job is
    admitted meanwhile instead of refused ``queue_full``. Nothing stays counted."""
    node = node_factory("worker", "--open", "--workers=1")
    a_home, b_home = tmp_path / "a", tmp_path / "b"
    init_home(a_home)
    a = identity.load(a_home / "key")
    spin = SPIN.read_bytes()
    lines = [json.dumps({"v": 1, "type": "job", "module_path": str(SPIN),
                         "manifest": make_manifest(
                             a, spin, None, argv=["spin.wasm", str(i)],
                             limits=dict(manifest.DEFAULT_LIMITS, fuel=150_000_000))})
             for i in range(71)]
    first = tmp_path / "first.jsonl"  # A's first job brings the module
    first.write_text(lines.pop() + "\n")
    r = subprocess.run([script("plasmd"), "submit", f"--home={a_home}", f"--jobs={first}",
                        f"--peer={node.peer}"], capture_output=True, timeout=300)
    assert b'"job_result"' in r.stdout, r.stderr.decode()[-2000:]
    proc = subprocess.Popen([script("plasmd"), "submit", f"--home={a_home}", "--jobs=-",
                             f"--peer={node.peer}", "--max-in-flight=70"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        assert proc.stdin is not None
        proc.stdin.write(("\n".join(lines) + "\n").encode())
        proc.stdin.flush()
        for _ in range(100_000):  # until A holds all it may
            st = control.query_home(node.home)
            if st["counters"].get("refused_over_share", 0) > 0:
                break
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
        else:
            raise AssertionError(f"A was never held to its share: {st['jobs']}")
        jobs = st["jobs"]
        assert jobs["queued"] + jobs["running"] == 63 and jobs["submitters"] == 1, jobs
        r = submit(b_home, node.peer, HELLO, stdin=b"fair", tmp=tmp_path, timeout=300)
        assert r.returncode == 0, r.stderr.decode()[-2000:]
        assert r.stdout == b"riaf"
    finally:
        proc.kill()  # A goes away: its jobs are cancelled
        proc.communicate()
    for _ in range(100_000):
        jobs = control.query_home(node.home)["jobs"]
        if jobs["queued"] == jobs["running"] == jobs["submitters"] == 0:
            break
    else:
        raise AssertionError(f"jobs still counted after A left: {jobs}")
