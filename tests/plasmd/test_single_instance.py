"""One plasmd per home, and a receipt log that survives crashes: real processes.

A second ``plasmd start`` on a running home is refused (exit 75, naming the running
pid and its socket) instead of sharing the identity, the socket and the receipt log.
A node killed with SIGKILL at seeded points restarts; whatever it left behind is either
recovered at start or repaired by ``plasmd receipts --repair``, and ``receipts
--verify`` passes after every round. Every wait is bounded.
"""

from __future__ import annotations

import json
import random
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.conftest import script
from tests.plasmd.conftest import EXAMPLES, HELLO, NodeProc, init_home, start_node

SPIN = EXAMPLES / "spin.wasm"


def plasmd(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([script("plasmd"), *args], capture_output=True, text=True,
                          timeout=timeout)


def second_start(home: Path) -> subprocess.CompletedProcess[str]:
    return plasmd("start", f"--home={home}", "--open")


def listed(home: Path) -> list[dict[str, Any]]:
    r = plasmd("receipts", "--verify", f"--home={home}")
    assert r.returncode == 0, r.stderr
    recs = [json.loads(x) for x in r.stdout.splitlines() if x.strip()]
    assert all(x["verified"] for x in recs)
    return recs


def status(home: Path) -> dict[str, Any]:
    r = plasmd("status", f"--home={home}")
    assert r.returncode == 0, r.stderr
    return dict(json.loads(r.stdout))


def wait_for(cond: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"{what}: not reached in {timeout} s"
        time.sleep(0.02)


def test_a_second_start_is_refused_and_names_the_running_node(tmp_path: Path) -> None:
    home, client = tmp_path / "node", tmp_path / "client"
    init_home(client)
    a = start_node(home, "--open")
    try:
        b = second_start(home)
        assert b.returncode == 75, b.stderr
        assert f"pid {a.proc.pid}" in b.stderr and str(home / "plasmd.sock") in b.stderr
        assert "home_in_use" in b.stderr
        assert b.stdout == ""  # no node_started record: nothing else was started
        # the running node still owns its socket and its log
        assert status(home)["pid"] == a.proc.pid
        r = subprocess.run([script("plasmd"), "submit", f"--home={client}", str(HELLO),
                            f"--peer={a.peer}"], capture_output=True, timeout=120)
        assert r.returncode == 0, r.stderr
        # the log has one writer: repair is refused while the node runs
        rep = plasmd("receipts", "--repair", f"--home={home}")
        assert rep.returncode == 75 and f"pid {a.proc.pid}" in rep.stderr
    finally:
        assert a.stop() == 0
    assert len(listed(home)) == 1
    assert not (home / "plasmd.sock").exists()


def test_a_symlinked_lock_file_is_not_followed(tmp_path: Path) -> None:
    home = tmp_path / "node"
    init_home(home)
    target = tmp_path / "elsewhere"
    (home / "plasmd.lock").symlink_to(target)
    r = second_start(home)
    assert r.returncode == 74 and "symbolic link" in r.stderr
    assert not target.exists()


def start_or_repair(home: Path, repairs: list[str]) -> NodeProc:
    """Start the node; if it refuses a damaged log, repair as the message says and retry."""
    try:
        return start_node(home, "--open")
    except AssertionError as e:
        assert "receipts --repair" in str(e), e
    r = plasmd("receipts", "--repair", f"--home={home}")
    assert r.returncode == 0, r.stderr
    repairs.append(r.stdout)
    return start_node(home, "--open")


def test_double_starts_and_kill_9_never_break_the_receipt_log(tmp_path: Path) -> None:
    """Rounds of: a second start (refused), a job, SIGKILL at a seeded point, sometimes
    the damage a crash mid-append (or a second writer) leaves, a restart that repairs
    when it is told to, and a verify."""
    rng = random.Random(20261130)
    home, client = tmp_path / "node", tmp_path / "client"
    init_home(client)
    acknowledged: set[str] = set()  # jobs whose receipt the submitter got
    repairs: list[str] = []
    points: list[str] = []
    damages: list[str] = []
    a = start_or_repair(home, repairs)
    for rnd in range(7):
        try:
            b = second_start(home)
            assert b.returncode == 75 and f"pid {a.proc.pid}" in b.stderr, b.stderr
            point = rng.choice(["after_job", "during_submit", "mid_job", "idle"])
            points.append(point)
            receipt = tmp_path / f"receipt-{rnd}.json"
            sub = [script("plasmd"), "submit", f"--home={client}", f"--peer={a.peer}",
                   f"--receipt={receipt}"]
            if point == "after_job":
                r = subprocess.run([*sub, str(HELLO)], capture_output=True, timeout=120)
                assert r.returncode == 0, r.stderr
            elif point == "during_submit":  # somewhere in the exchange, seeded
                p = subprocess.Popen([*sub, str(HELLO)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
                time.sleep(rng.uniform(0.0, 0.6))
            elif point == "mid_job":
                p = subprocess.Popen([*sub, str(SPIN), "--timeout=20"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                wait_for(lambda: status(home)["jobs"]["running"] == 1, "the spin runs")
        finally:
            a.proc.kill()  # SIGKILL: no drain, no cleanup
            a.proc.wait(30)
        if point in ("during_submit", "mid_job"):
            p.wait(120)
        if receipt.exists():
            acknowledged.add(json.loads(receipt.read_text())["body"]["job"])
        log_file = home / "receipts.jsonl"
        if log_file.exists() and rng.random() < 0.6:
            # what a kill in the middle of an append leaves (a seeded prefix of a
            # line), or what a second writer used to leave (its own entry 0)
            first = entry_lines(home)[0]
            kind = rng.choice(["torn", "second_writer"])
            damages.append(kind)
            with open(log_file, "ab") as f:
                f.write(first[:rng.randrange(1, len(first) - 1)] if kind == "torn"
                        else first)
        a = start_or_repair(home, repairs)  # restart; repair if told to
        jobs = {x["job"] for x in listed(home)}  # verify (the node runs: it may append)
        assert acknowledged <= jobs, f"round {rnd} ({point}): an acknowledged receipt is gone"
    assert a.stop() == 0
    assert "after_job" in points and len(set(points)) >= 3, points
    # the seed exercises both the repair at start and the repair command
    assert {"torn", "second_writer"} <= set(damages) and repairs, (damages, repairs)
    assert len(listed(home)) >= len(acknowledged) >= 1
    moved = sum(1 for d in damages if d == "torn")
    assert len(list(home.glob("receipts.jsonl.aside-*"))) >= moved + len(repairs)
    for out in repairs:  # a repair never deletes: what it cut is in its aside file
        rec = json.loads(out)
        assert Path(rec["aside"]).stat().st_size == rec["moved_bytes"] > 0


def entry_lines(home: Path) -> list[bytes]:
    return (home / "receipts.jsonl").read_bytes().splitlines(keepends=True)


def run_jobs(home: Path, client: Path, n: int) -> None:
    a = start_node(home, "--open")
    try:
        for _ in range(n):
            r = subprocess.run([script("plasmd"), "submit", f"--home={client}", str(HELLO),
                                f"--peer={a.peer}"], capture_output=True, timeout=120)
            assert r.returncode == 0, r.stderr
    finally:
        assert a.stop() == 0


def test_a_torn_tail_is_moved_aside_at_start_and_logged(tmp_path: Path) -> None:
    home, client = tmp_path / "node", tmp_path / "client"
    init_home(client)
    run_jobs(home, client, 2)
    torn = entry_lines(home)[1][:57]  # a crash in the middle of appending entry 2
    with open(home / "receipts.jsonl", "ab") as f:
        f.write(torn)
    a = start_node(home, "--open")
    try:
        moved = [e for e in a.logs() if e.get("event") == "receipts.torn_tail_moved_aside"]
        assert moved and moved[0]["bytes"] == len(torn)
    finally:
        assert a.stop() == 0
    asides = list(home.glob("receipts.jsonl.aside-*"))
    assert [p.read_bytes() for p in asides] == [torn]
    assert len(listed(home)) == 2


def test_a_log_two_writers_damaged_is_refused_then_repaired(tmp_path: Path) -> None:
    home, client = tmp_path / "node", tmp_path / "client"
    init_home(client)
    run_jobs(home, client, 3)
    lines = entry_lines(home)
    # what two daemons on one home used to leave: a second writer's own entry 0
    # (and its next one) after the first writer's entries
    stray = lines[0] + lines[1]
    with open(home / "receipts.jsonl", "ab") as f:
        f.write(stray)
    r = second_start(home)
    assert r.returncode == 1, r.stderr
    assert "receipt_log_tampered" in r.stderr and "has seq 0" in r.stderr
    assert f"plasmd receipts --repair --home={home}" in r.stderr
    v = plasmd("receipts", "--verify", f"--home={home}")
    assert v.returncode == 1 and "receipts --repair" in v.stderr

    rep = plasmd("receipts", "--repair", f"--home={home}")
    assert rep.returncode == 0, rep.stderr
    rec = json.loads(rep.stdout)
    assert rec["type"] == "receipts_repaired" and rec["kept"] == 3
    assert Path(rec["aside"]).read_bytes() == stray  # nothing dropped
    assert entry_lines(home) == lines
    assert len(listed(home)) == 3
    run_jobs(home, client, 1)  # the repaired home runs and appends again
    assert [x["seq"] for x in listed(home)] == [0, 1, 2, 3]
    again = plasmd("receipts", "--repair", f"--home={home}")  # an intact log: no-op
    assert json.loads(again.stdout)["aside"] is None


def test_repair_keeps_only_entries_this_node_signed(tmp_path: Path) -> None:
    home, client = tmp_path / "node", tmp_path / "client"
    init_home(client)
    run_jobs(home, client, 3)
    lines = entry_lines(home)
    rec = json.loads(lines[1])
    rec["receipt"]["body"]["exit_code"] = 42  # its signature no longer verifies
    lines[1] = json.dumps(rec, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    (home / "receipts.jsonl").write_bytes(b"".join(lines))
    rep = plasmd("receipts", "--repair", f"--home={home}")
    assert rep.returncode == 0, rep.stderr
    out = json.loads(rep.stdout)
    assert out["kept"] == 1
    assert Path(out["aside"]).read_bytes() == lines[1] + lines[2]
    assert len(listed(home)) == 1


def test_a_second_private_node_for_the_same_home_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "private"
    home.mkdir()
    a = start_node(home, "--mode=private", "--listen=127.0.0.1:0", init=False)
    try:
        b = plasmd("start", "--mode=private", f"--home={home}", "--listen=127.0.0.1:0")
        assert b.returncode == 75, b.stderr
        assert f"pid {a.proc.pid}" in b.stderr and "home_in_use" in b.stderr
    finally:
        assert a.stop() == 0
    assert not (home / "plasmd.lock").exists()  # private mode writes nothing there
