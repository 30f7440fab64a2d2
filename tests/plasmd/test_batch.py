"""Several jobs per stream against real plasmd processes over real QUIC.

Each job of a batch keeps its own signature, admission, fences and receipt; a
bad one fails alone; a huge input stream keeps at most ``max_in_flight`` jobs in
memory; a worker without the option (the code before it, run from git) gets
one job per stream and every job still runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from phase_core import envelope, identity, manifest
from phase_core.errors import PhaseError
from plasmd.pool import Job, Pool
from plasmd.submit import make_manifest
from tests.conftest import ROOT, script
from tests.plasmd.conftest import EXAMPLES, HELLO, init_home

TRAP, SPIN = EXAMPLES / "trap.wasm", EXAMPLES / "spin.wasm"


def _record(env: dict[str, Any], module: Path) -> str:
    return json.dumps({"v": 1, "type": "job", "manifest": env, "module_path": str(module)})


def test_a_batch_where_one_traps_one_runs_out_of_fuel_and_one_is_forged(
        tmp_path: Path, node_factory: Any) -> None:
    node = node_factory("worker", "--open")
    client = tmp_path / "client"
    init_home(client)
    me = identity.load(client / "key")
    hello, trap, spin = (p.read_bytes() for p in (HELLO, TRAP, SPIN))
    good = [make_manifest(me, hello, None, argv=["hello.wasm", str(i)]) for i in range(6)]
    trapped = make_manifest(me, trap, None, argv=["trap.wasm"])
    starved = make_manifest(me, spin, None, argv=["spin.wasm"],
                            limits=dict(manifest.DEFAULT_LIMITS, fuel=1_000_000))
    forged = make_manifest(me, hello, None, argv=["hello.wasm", "forged"])
    sig = forged["signatures"][0]["sig"]
    forged["signatures"][0]["sig"] = ("0" if sig[0] != "0" else "1") + sig[1:]
    lines = [_record(e, HELLO) for e in good[:3]] + [
        _record(trapped, TRAP), _record(starved, SPIN), _record(forged, HELLO),
        *(_record(e, HELLO) for e in good[3:])]
    jobs_file = tmp_path / "jobs.jsonl"
    jobs_file.write_text("\n".join(lines) + "\n")
    r = subprocess.run([script("plasmd"), "submit", f"--home={client}",
                        f"--jobs={jobs_file}", f"--peer={node.peer}"],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 1, r.stderr[-2000:]
    recs = [json.loads(line) for line in r.stdout.splitlines()]
    results = {x["job"]: x for x in recs if x["type"] == "job_result"}
    errors = [x for x in recs if x["type"] == "error"]
    ids = {name: envelope.parse(e).id
           for name, e in [("trap", trapped), ("spin", starved), ("forged", forged)]}
    good_ids = {envelope.parse(e).id for e in good}
    assert set(results) == good_ids | {ids["trap"], ids["spin"]}
    for jid in good_ids:
        assert results[jid]["ended"] == "exited" and results[jid]["exit_code"] == 0
        assert results[jid]["worker"] == node.node_id
    assert results[ids["trap"]]["ended"] == "trapped"
    assert results[ids["spin"]]["ended"] == "out_of_fuel"
    by_job = {e["job"]: e for e in errors}
    assert by_job[ids["forged"]]["error"] == "invalid_request"  # rejected alone
    assert by_job[ids["trap"]]["error"] == by_job[ids["spin"]]["error"] == "job_failed"
    assert len(errors) == 3
    # every receipt verifies on its own, with phase-verify, against the worker's key
    kr = tmp_path / "keyring.toml"
    kr.write_text(f'[keys.w]\nkey = "{node.node_id}"\nroles = ["worker"]\n')
    v = subprocess.run([script("phase-verify"), f"--keys={kr}", "--keep-going"],
                       input="\n".join(json.dumps(x) for x in results.values()) + "\n",
                       capture_output=True, text=True, timeout=60)
    assert v.returncode == 0, v.stderr[-2000:]
    assert sum(json.loads(x)["type"] == "verified" for x in v.stdout.splitlines()) == 8
    st = node.status()
    counters = st["counters"]
    assert counters["batches"] >= 1 and counters["batch_jobs"] >= 2  # they did share streams
    assert counters["rejected_invalid_request"] == 1
    assert counters["ended_trapped"] == 1 and counters["ended_out_of_fuel"] == 1
    assert st["receipts"] == 8  # one durable receipt per job that ran


def _jobs(me: identity.Identity, module: bytes, n: int, seen: list[int]) -> Any:
    for i in range(n):
        seen[0] += 1  # read from the input
        env = make_manifest(me, module, b"Hello, World", argv=["hello.wasm", str(i)])
        yield Job(env, {env["body"]["module"]: module, env["body"]["stdin"]: b"Hello, World"})


def test_a_huge_input_stream_keeps_at_most_max_in_flight_jobs(node_factory: Any) -> None:
    node = node_factory("worker", "--open")
    me = identity.Identity.generate()
    module = HELLO.read_bytes()
    n, cap = 1500, 16

    async def go() -> tuple[int, int, dict[str, int]]:
        read, taken, most = [0], 0, 0
        async with Pool(me, [node.peer], max_in_flight=cap) as pool:
            async for d in pool.map(_jobs(me, module, n, read)):
                assert d.error is None, d.error
                assert d.outcome is not None and d.outcome.stdout == b"dlroW ,olleH"
                taken += 1
                most = max(most, read[0] - taken, pool.in_flight)
            return taken, most, dict(pool.stats)

    taken, most, stats = asyncio.run(go())
    assert taken == n
    assert most <= cap  # never more read ahead of the results than the cap
    assert stats["batches"] > 0


def _old_sources(dest: Path) -> Path | None:
    """The packages as they were before the batch option (None without git)."""
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        return None
    path = "packages/phase-core/src/phase_core/protocol/jobs_worker.py"
    r = subprocess.run([git, "-C", str(ROOT), "log", "--format=%H", "-S", "BatchArrived",
                        "--", path], capture_output=True, text=True, check=False)
    first = r.stdout.split()[-1:] if r.returncode == 0 else []
    if not first:
        return None
    dest.mkdir()
    archive = subprocess.run([git, "-C", str(ROOT), "archive", f"{first[0]}^", "packages"],
                             capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest / "packages"


def test_an_old_worker_without_the_option_gets_one_job_per_stream(
        tmp_path: Path, node_factory: Any) -> None:
    old_src = _old_sources(tmp_path / "old")
    if old_src is None:
        pytest.skip("needs the project's git history for the code before the batch option")
    pythonpath = os.pathsep.join(str(p / "src") for p in sorted(old_src.iterdir())
                                 if (p / "src").is_dir())
    old = node_factory("old", "--open", env={"PYTHONPATH": pythonpath})
    new = node_factory("new", "--open")
    me = identity.Identity.generate()
    module = HELLO.read_bytes()

    async def run(peer: str) -> dict[str, int]:
        async with Pool(me, [peer], max_in_flight=32) as pool:
            n = 0
            async for d in pool.map(_jobs(me, module, 96, [0])):
                assert d.error is None, d.error
                n += 1
            assert n == 96
            return dict(pool.stats)

    old_stats = asyncio.run(run(old.peer))
    assert old_stats.get("batches", 0) == 0 and old_stats["streams_single"] >= 96
    assert "batches" not in old.status()["counters"]
    new_stats = asyncio.run(run(new.peer))  # the same load batches on a new worker
    assert new_stats["batches"] > 0


def test_submit_jobs_reads_stdin_and_reports_a_bad_line_alone(
        tmp_path: Path, node_factory: Any) -> None:
    node = node_factory("worker", "--open")
    client = tmp_path / "client"
    init_home(client)
    me = identity.load(client / "key")
    ok = make_manifest(me, HELLO.read_bytes(), None, argv=["hello.wasm"])
    text = "\n".join([_record(ok, HELLO), "{not json",
                      json.dumps({"v": 1, "type": "job", "manifest": ok,
                                  "module_path": str(TRAP)})]) + "\n"
    r = subprocess.run([script("plasmd"), "submit", f"--home={client}", "--jobs=-",
                        f"--peer={node.peer}"], input=text, capture_output=True, text=True,
                       timeout=120)
    recs = [json.loads(line) for line in r.stdout.splitlines()]
    assert [x["type"] for x in recs].count("job_result") == 1
    errs = sorted((x["line"], x["error"]) for x in recs if x["type"] == "error")
    assert errs == [(2, "malformed"), (3, "digest_mismatch")], errs
    assert r.returncode == 65


def test_answers_stream_back_as_each_job_ends_not_when_the_batch_does(
        node_factory: Any) -> None:
    node = node_factory("worker", "--open")
    me = identity.Identity.generate()
    hello, spin = HELLO.read_bytes(), SPIN.read_bytes()
    slow = make_manifest(me, spin, None, argv=["spin.wasm"],
                         limits=dict(manifest.DEFAULT_LIMITS, wall_ms=2000))
    jobs = [*_jobs(me, hello, 1, [0]), Job(slow, {slow["body"]["module"]: spin}),
            *_jobs(me, hello, 6, [0])]

    async def go() -> tuple[list[int], dict[str, int], str | None]:
        order = []
        async with Pool(me, [node.peer]) as pool:
            async for d in pool.map(jobs):
                assert d.error is None, d.error
                order.append(d.index)
                if d.index > 1 and len(order) == 2:  # the first answer of the batch:
                    st = await asyncio.to_thread(node.status)  # its slow mate still runs
                    assert st["jobs"]["running"] == 1, st["jobs"]
                if d.index == 1:
                    assert d.outcome is not None
                    ended = d.outcome.body["ended"]
            return order, dict(pool.stats), ended

    order, stats, ended = asyncio.run(go())
    assert stats["batches"] == 1 and stats["batched_jobs"] == 7  # the slow one and 6 more
    assert order[-1] == 1 and ended == "timeout"  # its batch-mates did not wait for it


def test_a_lone_job_is_never_held_for_a_batch(node_factory: Any) -> None:
    """One job at a time: each goes at once on a stream of its own, never batched."""
    node = node_factory("worker", "--open")
    me = identity.Identity.generate()
    module = HELLO.read_bytes()

    async def go() -> dict[str, int]:
        async with Pool(me, [node.peer], linger_s=3600) as pool:  # a hold would hang
            for job in _jobs(me, module, 12, [0]):
                out = await asyncio.wait_for(await pool.submit(job), 60)
                assert out.stdout == b"dlroW ,olleH"
            return dict(pool.stats)

    stats = asyncio.run(go())
    assert stats["streams_single"] == 12 and stats.get("batches", 0) == 0


@pytest.mark.parametrize("args", [["x.wasm", "--jobs=-"], ["--jobs=-"],
                                  ["--jobs=-", "--peer=127.0.0.1:9", "--max-in-flight=0"]])
def test_submit_jobs_usage_errors(tmp_path: Path, args: list[str]) -> None:
    client = tmp_path / "client"
    init_home(client)
    r = subprocess.run([script("plasmd"), "submit", f"--home={client}", *args], input="",
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 64, r.stderr[-1000:]
    assert r.stdout == ""


def test_one_batch_with_a_trap_a_fuel_overrun_and_a_forged_signature(
        node_factory: Any) -> None:
    """The same mix as above, all six jobs provably in ONE batch (queued in one tick
    on a warm connection whose worker advertised job-batch)."""
    from plasmd.submit import JobRejected

    node = node_factory("worker", "--open")
    me = identity.Identity.generate()
    hello, trap, spin = (p.read_bytes() for p in (HELLO, TRAP, SPIN))
    forged = make_manifest(me, hello, None, argv=["forged"])
    sig = forged["signatures"][0]["sig"]
    forged["signatures"][0]["sig"] = ("0" if sig[0] != "0" else "1") + sig[1:]
    starved = make_manifest(me, spin, None, limits=dict(manifest.DEFAULT_LIMITS, fuel=10**6))
    trapped = make_manifest(me, trap, None)
    mix = [Job(trapped, {trapped["body"]["module"]: trap}),
           Job(starved, {starved["body"]["module"]: spin}),
           Job(forged, {forged["body"]["module"]: hello}),
           *_jobs(me, hello, 3, [0])]

    async def go() -> tuple[list[Any], dict[str, int]]:
        async with Pool(me, [node.peer], linger_s=3600) as pool:
            await (await pool.submit(next(_jobs(me, hello, 1, [0]))))  # warm, features known
            while not pool._peers[0].batch_ok:
                await asyncio.sleep(0.01)
            before = dict(pool.stats)
            futs = [await pool.submit(j) for j in mix]  # all queued before the sender runs
            got = await asyncio.gather(*futs, return_exceptions=True)
            return got, {k: v - before.get(k, 0) for k, v in pool.stats.items()}

    got, stats = asyncio.run(go())
    assert stats["batches"] == 1 and stats["batched_jobs"] == 6
    assert got[0].body["ended"] == "trapped"
    assert got[1].body["ended"] == "out_of_fuel"
    assert isinstance(got[2], JobRejected) and got[2].slug == "invalid_request"
    assert all(o.stdout == b"dlroW ,olleH" and o.body["ended"] == "exited" for o in got[3:])
    assert len({o.receipt["body"]["job"] for o in (*got[:2], *got[3:])}) == 5  # its own each


def test_a_submitter_that_goes_away_mid_batch_stops_every_job_of_it(
        node_factory: Any) -> None:
    """The Pool closes (its connection ends) while two jobs of a batch run and two wait:
    the worker stops the guests, records nothing, and counts four cancelled jobs."""
    import time

    from tests.plasmd.test_node import reconfigure

    w = node_factory("worker", "--open", "--workers=2")
    reconfigure(w, "fuel = 10000000000", "fuel = 1000000000000")  # only a cancel ends them
    me = identity.Identity.generate()
    hello, spin = HELLO.read_bytes(), SPIN.read_bytes()
    slow = [make_manifest(me, spin, None, argv=["spin", str(i)],
                          limits=dict(manifest.DEFAULT_LIMITS, fuel=10**12, wall_ms=60_000))
            for i in range(4)]

    async def go() -> dict[str, int]:
        pool = Pool(me, [w.peer], linger_s=3600)
        await (await pool.submit(next(_jobs(me, hello, 1, [0]))))  # warm, features known
        while not pool._peers[0].batch_ok:
            await asyncio.sleep(0.01)
        futs = [await pool.submit(Job(m, {m["body"]["module"]: spin})) for m in slow]
        while (await asyncio.to_thread(w.status))["jobs"]["running"] < 2:
            await asyncio.sleep(0.05)
        stats = dict(pool.stats)
        await pool.close()  # the connection ends: the submitter is gone
        got = await asyncio.gather(*futs, return_exceptions=True)
        assert all(isinstance(g, PhaseError) for g in got), got  # each job fails, alone
        return stats

    stats = asyncio.run(go())
    assert stats["batches"] == 1 and stats["batched_jobs"] == 4
    deadline = time.monotonic() + 60  # a bound for a broken worker, not a measure
    while (st := w.status())["jobs"]["running"] + st["jobs"]["queued"] or \
            st["counters"].get("jobs_cancelled", 0) < 4:
        assert time.monotonic() < deadline, st
        time.sleep(0.1)
    assert st["counters"]["jobs_cancelled"] == 4 and st["receipts"] == 1  # the warm-up's
    assert "jobs_done" not in st["counters"] or st["counters"]["jobs_done"] == 1
