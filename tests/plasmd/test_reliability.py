"""plasmd when things go wrong: real processes on 127.0.0.1.

Submitters and workers that die in the middle of a job, and guests that misbehave on a
worker while other jobs run beside them. Every wait is bounded; every process started
here is stopped here (or by ``node_factory``).
"""

from __future__ import annotations

import base64
import collections
import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from phase_core.aio import quic
from phase_core.identity import Identity
from plasmd import control
from tests.conftest import script
from tests.phase_core.net.conftest import run
from tests.plasmd.conftest import EXAMPLES, HELLO, NodeProc, init_home, submit

SPIN = EXAMPLES / "spin.wasm"


def status(w: NodeProc) -> dict[str, Any]:
    return control.query_home(w.home)


def wait_for(cond: Any, timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"{what}: not reached in {timeout} s"
        time.sleep(0.02)


def start_submit(client: Path, peer: str, module: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([script("plasmd"), "submit", f"--home={client}", str(module),
                             f"--peer={peer}", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(p: subprocess.Popen[bytes], timeout: float = 60) -> tuple[int, bytes, bytes]:
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise
    return p.returncode, out, err


def verify_receipts(home: Path) -> list[dict[str, Any]]:
    r = subprocess.run([script("plasmd"), "receipts", "--verify", f"--home={home}"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    recs = [json.loads(x) for x in r.stdout.splitlines() if x.strip()]
    assert all(x["verified"] for x in recs)
    return recs


def failures(stderr: bytes) -> list[dict[str, Any]]:
    lines = [json.loads(x) for x in stderr.splitlines() if x.startswith(b"{")]
    return [e for e in lines if e.get("event") == "plasmd.failed"]


# -- the submitter goes away ---------------------------------------------------------------

def test_a_submitter_that_vanishes_mid_job_leaves_the_worker_healthy(node_factory, tmp_path):
    w = node_factory("worker", "--open", "--workers=2")
    client = tmp_path / "client"
    init_home(client)

    # killed outright (SIGKILL: no goodbye on the connection)
    spin = start_submit(client, w.peer, SPIN, "--timeout=2")
    wait_for(lambda: status(w)["jobs"]["running"] == 1, what="the spin runs")
    spin.kill()
    assert finish(spin)[0] == -signal.SIGKILL
    r = submit(client, w.peer, HELLO, stdin=b"next job", tmp=tmp_path)
    assert r.returncode == 0 and r.stdout == b"boj txen", r.stderr
    # the orphan ends by its own fence; the node is idle and healthy again
    wait_for(lambda: status(w)["jobs"]["done"] == 2 and status(w)["jobs"]["running"] == 0,
             what="the orphaned job ends")

    # interrupted (Ctrl-C: the client aborts its stream and closes the connection): the
    # worker stops the guest at once, long before its own 20 s fence
    spin = start_submit(client, w.peer, SPIN, "--timeout=20")
    wait_for(lambda: status(w)["jobs"]["running"] == 1, what="the second spin runs")
    spin.send_signal(signal.SIGINT)
    rc, out, err = finish(spin)
    assert rc == 130 and out == b"", err
    wait_for(lambda: any(e.get("event") == "job.cancelled" for e in w.logs()),
             what="the worker notices the submitter left")
    wait_for(lambda: status(w)["jobs"]["running"] == 0 and status(w)["jobs"]["queued"] == 0)
    left = [e for e in w.logs() if e.get("event") == "job.cancelled"]
    assert len(left) == 1 and left[0]["error"] == "interrupted", left
    assert left[0]["peer"] == json.loads((client / "key").read_text())["key"]
    assert not [e for e in w.logs() if e.get("event") in ("job.failed", "job.orphaned")]
    assert status(w)["counters"]["jobs_cancelled"] == 1

    r = submit(client, w.peer, HELLO, stdin=b"and the next", tmp=tmp_path)
    assert r.returncode == 0 and r.stdout == b"txen eht dna", r.stderr
    st = status(w)
    assert st["counters"]["wasm_runs"] == 4 and st["jobs"]["running"] == 0
    errors = [e for e in w.logs() if e.get("level") == "error"]
    assert not errors, errors
    recs = verify_receipts(w.home)  # the cancelled run signed nothing
    assert collections.Counter(x["ended"] for x in recs) == {"timeout": 1, "exited": 2}


# -- the worker dies -------------------------------------------------------------------------

def test_a_worker_killed_mid_job_fails_the_client_and_restarts_cleanly(node_factory, tmp_path):
    w = node_factory("worker", "--open")
    client = tmp_path / "client"
    r = submit(client, w.peer, HELLO, stdin=b"before", tmp=tmp_path)
    assert r.returncode == 0 and r.stdout == b"erofeb", r.stderr

    timeout_s = 1  # the job's wall clock; the client's deadline is that plus 30 s
    spin = start_submit(client, w.peer, SPIN, f"--timeout={timeout_s}")
    wait_for(lambda: status(w)["jobs"]["running"] == 1, what="the spin runs")
    started = time.monotonic()
    w.proc.kill()
    assert w.proc.wait(30) == -signal.SIGKILL

    # the same home comes back up, with the same identity and an intact receipt log,
    # while the client is still waiting for its result
    w2 = node_factory("worker", "--open")
    assert w2.node_id == w.node_id
    wait_for(lambda: any(e.get("event") == "node.started" for e in w2.logs()),
             what="the restarted node logs its start")
    assert "receipts.torn_tail_moved_aside" not in [e.get("event") for e in w2.logs()]
    assert not [e for e in w2.logs() if e.get("level") in ("warning", "error")]
    assert [x["ended"] for x in verify_receipts(w2.home)] == ["exited"]
    r = submit(client, w2.peer, HELLO, stdin=b"after", tmp=tmp_path)
    assert r.returncode == 0 and r.stdout == b"retfa", r.stderr
    assert [x["ended"] for x in verify_receipts(w2.home)] == ["exited", "exited"]

    rc, out, err = finish(spin, timeout=timeout_s + 30 + 30)
    elapsed = time.monotonic() - started
    assert rc not in (0, 70) and rc in (69, 75, 76), err
    assert out == b""
    failed = failures(err)
    assert len(failed) == 1 and failed[0]["message"], err
    assert elapsed <= timeout_s + 30 + 5, f"the client took {elapsed:.1f} s to give up"
    assert status(w2)["jobs"]["done"] == 1


# -- misbehaving guests ----------------------------------------------------------------------

GUESTS = [  # module, extra arguments, expected `ended`, expected exit status
    ("spin.wasm", ["--timeout=1"], "timeout", 152),
    ("spin.wasm", ["--fuel=1000000"], "out_of_fuel", 151),
    ("membomb.wasm", ["--max-memory=16M"], "memory_limit", 153),
    ("flood.wasm", ["--max-output=64K"], "output_limit", 154),
    ("recurse.wasm", [], "trapped", 134),
    ("stdin_block.wasm", ["--timeout=1", "--stdin={stdin}"], "timeout", 152),
    ("trap.wasm", [], "trapped", 134),
    ("exit.wasm", ["7"], "exited", 7),
]


def test_misbehaving_guests_end_by_the_right_fence_side_by_side(node_factory, tmp_path):
    w = node_factory("worker", "--open", f"--workers={len(GUESTS)}")
    client = tmp_path / "client"
    init_home(client)
    stdin = tmp_path / "stdin"
    stdin.write_bytes(b"y\n" * 1000)
    procs = []
    for i, (module, args, _, _) in enumerate(GUESTS):
        args = [a.format(stdin=stdin) for a in args]
        rfile = tmp_path / f"receipt-{i}.json"
        # one key per submitter: the worker allows four connections per peer
        procs.append(start_submit(client, w.peer, EXAMPLES / module, "--json",
                                  "--ephemeral-key", f"--receipt={rfile}", *args))
    seen = []
    for (module, _, ended, code), p, i in zip(GUESTS, procs, range(len(GUESTS)), strict=True):
        rc, out, err = finish(p)
        assert rc == code, (module, err)
        rec = json.loads(out)
        receipt = json.loads((tmp_path / f"receipt-{i}.json").read_text())
        assert rec["ended"] == receipt["body"]["ended"] == ended, module
        assert rec["envelope"] == receipt and receipt["body"]["worker"] == w.node_id
        if module == "flood.wasm":
            assert len(base64.b64decode(rec["stdout_b64"])) <= 64 << 10
        seen.append(ended)
    assert collections.Counter(x["ended"] for x in verify_receipts(w.home)) == \
        collections.Counter(seen)
    st = status(w)
    assert st["jobs"]["done"] == len(GUESTS) and st["jobs"].get("failed", 0) == 0
    r = submit(client, w.peer, HELLO, stdin=b"the node survived", tmp=tmp_path)
    assert r.returncode == 0 and r.stdout == b"devivrus edon eht", r.stderr


def test_a_hello_beside_a_spinning_guest_returns_first(node_factory, tmp_path):
    w = node_factory("worker", "--open", "--workers=2")
    client = tmp_path / "client"
    init_home(client)
    (tmp_path / "in").write_bytes(b"Hello, World")
    spin = start_submit(client, w.peer, SPIN, "--timeout=4", "--json")
    wait_for(lambda: status(w)["jobs"]["running"] == 1, what="the spin runs")
    hello = start_submit(client, w.peer, HELLO, f"--stdin={tmp_path / 'in'}")
    rc, out, err = finish(hello)
    still_spinning = spin.poll() is None
    assert rc == 0 and out == b"dlroW ,olleH", err
    assert still_spinning, "the hello had to wait for the spin"
    rc, out, err = finish(spin)
    assert rc == 152 and json.loads(out)["ended"] == "timeout", err


# -- request streams end once ---------------------------------------------------------------

def test_a_late_fin_on_a_finished_request_starts_no_second_handler(node_factory):
    """The order every well-behaved client may produce: the worker answers and finishes its
    half first, the client's FIN comes after (in a real job this is a race, seen as an
    error-level ``net.handler_crashed`` line now and then)."""
    w = node_factory("worker", "--open")
    ident = Identity(bytes(range(32)))

    async def main() -> None:
        conn = await quic.connect("127.0.0.1", w.port, ident, expected_node_id=w.node_id)
        s = await conn.open_stream()
        await s.send({"type": "ping", "nonce": "a"})
        assert await s.recv() == {"type": "pong", "nonce": "a"}
        assert await s.recv() is None  # the worker's handler has returned
        s.finish()  # our half ends now: too late for that handler
        s2 = await conn.open_stream()
        await s2.send({"type": "ping", "nonce": "b"})
        assert await s2.recv() == {"type": "pong", "nonce": "b"}
        s2.finish()
        await conn.close()

    run(main())
    t = status(w)["transport"]
    crashed = [e for e in w.logs() if e.get("event") == "net.handler_crashed"]
    assert crashed == [] and t.get("handler_errors", 0) == 0
    assert t["streams_accepted"] == 2
