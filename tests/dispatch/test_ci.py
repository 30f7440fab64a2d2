"""The dispatcher against real plasmd worker processes on loopback: 500 jobs over 8
workers with two killed mid-batch, and a lying worker outvoted at 3 replicas,
quorum 2, recorded in the disagreement log and avoided by the next dispatch."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from phase_core import identity, timefmt
from plasmd.disagreelog import DisagreementLog, log_path
from tests.conftest import script
from tests.dispatch.conftest import hello_jobs, records, start_workers
from tests.records import check_stdout


def _dispatch(home: Path, peers: list[str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([script("plasmd"), "dispatch", f"--home={home}",
                             "--peer=" + ",".join(peers), *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _check_results(recs: list[dict[str, Any]], ids: list[str], tag: str) -> None:
    """One job_result per input line, its index naming that line's job, the output
    right for that job."""
    results = [r for r in recs if r["type"] == "job_result"]
    assert sorted(int(r["index"]) for r in results) == list(range(len(ids)))
    for r in results:
        i = int(r["index"])
        assert r["line"] == i + 1
        assert r["job"] == ids[i]
        out = base64.b64decode(str(r["stdout_b64"])).decode()
        assert out == f"{tag} {i}"[::-1], (i, out)


def test_500_jobs_on_8_workers_two_killed_mid_batch_lose_none(
        tmp_path: Path, client_home: Path, stop_all: list[Any]) -> None:
    nodes = start_workers(tmp_path, 8)
    stop_all.extend(nodes)
    lines, ids = hello_jobs(client_home, 500, tmp_path / "in")
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text("\n".join(lines) + "\n")
    p = subprocess.Popen([script("plasmd"), "dispatch", f"--home={client_home}",
                          "--peer=" + ",".join(n.peer for n in nodes), f"--jobs={jobs}"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout is not None
    got = []
    killed = nodes[2:4]
    for line in p.stdout:
        got.append(line)
        if len(got) == 100:  # mid-batch: both have jobs in flight now
            for n in killed:
                n.proc.send_signal(signal.SIGKILL)
            killed_at = time.time()
    err = p.stderr.read() if p.stderr else ""
    assert p.wait(120) == 0, err[-3000:]
    out = "".join(got)
    check_stdout(out)
    recs = records(out)
    assert [r["type"] for r in recs] == ["job_result"] * 500  # exactly once each
    _check_results(recs, ids, "job")
    dead = {n.node_id for n in killed}
    for r in recs:  # nothing from a dead worker but what it finished before it died
        if r["worker"] in dead:
            done = timefmt.parse_time(r["envelope"]["body"]["completed"])
            assert done <= killed_at + 1
    assert any(int(r["attempts"]) > 1 for r in recs)
    # no surviving worker ran a job twice
    for n in nodes:
        if n in killed:
            continue
        listed = subprocess.run([script("plasmd"), "receipts", f"--home={n.home}"],
                                capture_output=True, text=True, timeout=60)
        jobs_run = [json.loads(x)["job"] for x in listed.stdout.splitlines()]
        assert len(jobs_run) == len(set(jobs_run))


def test_a_liar_is_outvoted_at_3_of_2_recorded_and_avoided_next_time(
        tmp_path: Path, client_home: Path, stop_all: list[Any]) -> None:
    nodes = start_workers(tmp_path, 8, liars=1)
    stop_all.extend(nodes)
    liar = nodes[0].node_id
    peers = [n.peer for n in nodes]
    lines, ids = hello_jobs(client_home, 120, tmp_path / "in")
    p = _dispatch(client_home, peers, "--replicas=3", "--quorum=2")
    out, err = p.communicate("\n".join(lines) + "\n", timeout=300)
    assert p.returncode == 0, err[-3000:]
    check_stdout(out)
    recs = records(out)
    assert [r["type"] for r in recs] == ["job_result"] * 120
    _check_results(recs, ids, "job")  # no flipped output was accepted
    for r in recs:
        assert liar not in r["agreed"]
        assert len(r["agreed"]) >= 2 and len(set(r["agreed"])) == len(r["agreed"])
    # the lies are in the signed log, and nothing else is
    me = identity.load(client_home / "key")
    entries = DisagreementLog(log_path(client_home), me).verify()
    assert entries and {e["node"] for e in entries} == {liar}
    assert {e["verdict"] for e in entries} == {"outvoted"}
    assert all(e["job"] in ids and liar not in e["agreeing"] for e in entries)
    # the next dispatch reads the log and leaves the liar out
    lines2, ids2 = hello_jobs(client_home, 40, tmp_path / "in2", tag="again")
    p = _dispatch(client_home, peers)
    out, err = p.communicate("\n".join(lines2) + "\n", timeout=300)
    assert p.returncode == 0, err[-3000:]
    recs = records(out)
    _check_results(recs, ids2, "again")
    assert liar not in {r["worker"] for r in recs}
