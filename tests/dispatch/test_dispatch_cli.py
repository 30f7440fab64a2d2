"""``plasmd dispatch`` as a process: malformed input lines, disputes and their
settlement by re-execution, and Ctrl-C."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from phase_core import identity, manifest
from plasmd.disagreelog import DisagreementLog, log_path
from plasmd.submit import make_manifest
from tests.conftest import script
from tests.dispatch.conftest import hello_jobs, records, spin_job, start_workers
from tests.plasmd.conftest import EXAMPLES, HELLO
from tests.records import check_stdout


def _run(home: Path, peers: list[str], text: str, *args: str
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([script("plasmd"), "dispatch", f"--home={home}",
                           "--peer=" + ",".join(peers), *args], input=text,
                          capture_output=True, text=True, timeout=300)


def test_malformed_lines_get_an_error_record_each_and_nothing_is_lost(
        tmp_path: Path, client_home: Path, stop_all: list[Any]) -> None:
    nodes = start_workers(tmp_path, 2)
    stop_all.extend(nodes)
    good, ids = hello_jobs(client_home, 4, tmp_path / "in")
    upstream = json.dumps({"v": 1, "type": "error", "error": "digest_mismatch",
                           "message": "upstream", "exit_code": 1})
    lines = [good[0], "{not json", good[1],
             json.dumps({"v": 1, "type": "job", "module_path": "x"}),  # no manifest
             json.dumps({"v": 1, "type": "blob", "id": "sha256:" + "0" * 64}),  # dropped
             upstream, good[2], "", good[3]]
    r = _run(client_home, [n.peer for n in nodes], "\n".join(lines) + "\n")
    assert r.returncode == 65, r.stderr[-2000:]
    check_stdout(r.stdout)
    recs = records(r.stdout)
    results = {int(x["index"]): x for x in recs if x["type"] == "job_result"}
    errors = [x for x in recs if x["type"] == "error"]
    # indexes count the lines that are (or should have been) jobs, in input order
    assert {i: x["job"] for i, x in results.items()} == {0: ids[0], 2: ids[1], 4: ids[2],
                                                          5: ids[3]}
    assert {i: x["line"] for i, x in results.items()} == {0: 1, 2: 3, 4: 7, 5: 9}
    bad = {int(e["index"]): e for e in errors if "index" in e}
    assert bad[1]["error"] == "malformed" and bad[1]["line"] == 2
    assert bad[3]["line"] == 4 and bad[3]["exit_code"] == 65
    assert "manifest" in str(bad[3]["message"])
    assert [e for e in errors if "index" not in e] == [json.loads(upstream)]  # passed on


def _det_jobs(home: Path, n: int, tag: str) -> list[str]:
    me = identity.load(home / "key")
    module = HELLO.read_bytes()
    out = []
    for i in range(n):
        env = make_manifest(me, module, f"{tag} {i}".encode(), argv=["hello.wasm"],
                            deterministic=True)
        stdin = home.parent / f"{tag}-{i}.in"
        stdin.write_bytes(f"{tag} {i}".encode())
        out.append(json.dumps({"v": 1, "type": "job", "manifest": env,
                               "module_path": str(HELLO), "stdin_path": str(stdin)}))
    return out


def test_a_dispute_is_reported_with_every_receipt_or_settled_by_reexecution(
        tmp_path: Path, client_home: Path, stop_all: list[Any]) -> None:
    nodes = start_workers(tmp_path, 2, liars=1)
    stop_all.extend(nodes)
    liar, honest = nodes[0].node_id, nodes[1].node_id
    peers = [n.peer for n in nodes]
    text = "\n".join(_det_jobs(client_home, 3, "det")) + "\n"
    r = _run(client_home, peers, text, "--replicas=2", "--quorum=2")
    assert r.returncode == 1, r.stderr[-2000:]
    check_stdout(r.stdout)
    recs = records(r.stdout)
    disputed = [x for x in recs if x["type"] == "disputed"]
    assert sorted(int(x["index"]) for x in disputed) == [0, 1, 2]
    for x in disputed:
        assert {rc["worker"] for rc in x["receipts"]} == {liar, honest}
    assert [x["error"] for x in recs if x["type"] == "error"] == ["disputed"] * 3
    me = identity.load(client_home / "key")
    entries = DisagreementLog(log_path(client_home), me).verify()
    assert sorted(e["node"] for e in entries) == sorted([liar, honest] * 3)
    assert {e["verdict"] for e in entries} == {"disputed"}
    # settled here: the local run agrees with the honest worker
    assert not DisagreementLog(log_path(client_home), me).counts()  # no one shown wrong
    text = "\n".join(_det_jobs(client_home, 3, "settle")) + "\n"
    r = _run(client_home, peers, text, "--replicas=2", "--quorum=2", "--deterministic",
             "--settle=reexec")
    assert r.returncode == 0, r.stderr[-2000:]
    check_stdout(r.stdout)
    recs = records(r.stdout)
    assert [x["type"] for x in recs] == ["job_result"] * 3
    assert all(x["settled"] == "reexec" and x["agreed"] == [honest] for x in recs)
    later = DisagreementLog(log_path(client_home), me).verify()[len(entries):]
    assert [e["node"] for e in later] == [liar] * 3
    assert {e["verdict"] for e in later} == {"reexec"}


def test_settle_reexec_needs_deterministic(client_home: Path) -> None:
    r = _run(client_home, ["127.0.0.1:9"], "", "--replicas=3", "--settle=reexec")
    assert r.returncode == 64 and "--deterministic" in r.stderr


def test_a_quorum_that_is_not_a_majority_is_a_usage_error(client_home: Path) -> None:
    r = _run(client_home, ["127.0.0.1:9"], "", "--replicas=4", "--quorum=2")
    assert r.returncode == 64 and "majority" in r.stderr


def test_ctrl_c_writes_what_ended_reports_the_rest_and_exits_130(
        tmp_path: Path, client_home: Path, stop_all: list[Any]) -> None:
    nodes = start_workers(tmp_path, 1)
    stop_all.extend(nodes)
    quick, _ = hello_jobs(client_home, 2, tmp_path / "in")
    me = identity.load(client_home / "key")
    spin = (EXAMPLES / "spin.wasm").read_bytes()
    slow = [json.dumps({"v": 1, "type": "job", "module_path": str(EXAMPLES / "spin.wasm"),
                        "manifest": make_manifest(me, spin, None, argv=["spin.wasm", str(i)],
                                                  limits=dict(manifest.DEFAULT_LIMITS,
                                                              wall_ms=120_000))})
            for i in range(3)]
    p = subprocess.Popen([script("plasmd"), "dispatch", f"--home={client_home}",
                          f"--peer={nodes[0].peer}"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdin is not None and p.stdout is not None
    p.stdin.write("\n".join(quick) + "\n")
    p.stdin.flush()  # stdin stays open: the dispatcher is still reading
    first = [p.stdout.readline(), p.stdout.readline()]
    assert all(json.loads(x)["type"] == "job_result" for x in first), first
    p.stdin.write("\n".join(slow) + "\n")
    p.stdin.flush()
    for _ in range(600):  # the spinning guests are running on the worker
        jobs: Any = nodes[0].status()["jobs"]
        if jobs["running"] >= 1:
            break
        time.sleep(0.1)
    p.send_signal(signal.SIGINT)
    rest, err = p.communicate(timeout=60)
    assert p.returncode == 130, err[-2000:]
    recs = [json.loads(x) for x in first] + records(rest)
    check_stdout("".join(first) + rest)
    assert sorted(int(x["index"]) for x in recs) == [0, 1, 2, 3, 4]
    assert [x["error"] for x in recs[2:]] == ["interrupted"] * 3
    assert all(x["exit_code"] == 130 for x in recs[2:])


def test_an_attempt_past_its_deadline_is_retried_on_another_node(
        tmp_path: Path, client_home: Path, stop_all: list[Any]) -> None:
    nodes = start_workers(tmp_path, 2)
    stop_all.extend(nodes)
    line = spin_job(client_home, wall_ms=60_000)
    r = _run(client_home, [n.peer for n in nodes], line + "\n", "--job-timeout=2s",
             "--max-attempts=3")
    assert r.returncode == 69, r.stderr[-2000:]
    check_stdout(r.stdout)
    [rec] = records(r.stdout)
    assert rec["error"] == "unavailable" and rec["index"] == 0
    tried = rec["attempts"]
    assert [a["error"] for a in tried] == ["timeout", "timeout"]
    assert {a["node"] for a in tried} == {n.node_id for n in nodes}


def test_results_come_in_completion_order_with_their_input_index(
        tmp_path: Path, client_home: Path, stop_all: list[Any]) -> None:
    nodes = start_workers(tmp_path, 2)
    stop_all.extend(nodes)
    quick, ids = hello_jobs(client_home, 3, tmp_path / "in")
    lines = [spin_job(client_home, fuel=3_000_000_000), *quick]
    r = _run(client_home, [n.peer for n in nodes], "\n".join(lines) + "\n")
    assert r.returncode == 1, r.stderr[-2000:]  # the spinning job runs out of fuel
    recs = [x for x in records(r.stdout) if x["type"] == "job_result"]
    assert [x["index"] for x in recs][-1] == 0  # the first line ends last
    assert recs[-1]["ended"] == "out_of_fuel"
    assert sorted(x["index"] for x in recs[:-1]) == [1, 2, 3]
    assert all(x["job"] == ids[int(x["index"]) - 1] for x in recs[:-1])


def test_distinct_addresses_will_not_take_three_replicas_from_one_host(
        tmp_path: Path, client_home: Path, stop_all: list[Any]) -> None:
    """Three node ids on one machine (one address) fill one replica slot, not three."""
    nodes = start_workers(tmp_path, 3)
    stop_all.extend(nodes)
    lines, _ = hello_jobs(client_home, 2, tmp_path / "in")
    peers = [n.peer for n in nodes]
    r = _run(client_home, peers, "\n".join(lines) + "\n", "--replicas=3",
             "--distinct-addresses")
    assert r.returncode == 69, r.stderr[-2000:]
    recs = records(r.stdout)
    assert [x["error"] for x in recs] == ["no_quorum", "no_quorum"]
    assert all(len(x["attempts"]) == 0 for x in recs)
    r = _run(client_home, peers, "\n".join(hello_jobs(client_home, 2, tmp_path / "in2",
                                                      tag="b")[0]) + "\n", "--replicas=3")
    assert r.returncode == 0, r.stderr[-2000:]  # without the option, they count as three
