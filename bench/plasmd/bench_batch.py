"""Batching: hello jobs/s and CPU per job at 64 concurrent submitters, with and without.

    .venv/bin/python bench/plasmd/bench_batch.py [--quick] [--json] [--rounds=N]

A real worker (``plasmd start --open --listen=127.0.0.1:0`` in a throw-away home) and
one load process (this script with ``--load``): 64 concurrent asyncio submitters, each
awaiting ``plasmd.pool.Pool.submit`` of its next job, on one ``Pool`` (one warm
connection). Manifests are signed before the clock starts; every receipt is verified.
Two modes, interleaved in rounds, each on a fresh worker:

- ``batching``: the Pool batches queued jobs (up to 64 per stream, Nagle's rule);
- ``one-per-stream``: ``max_batch=1``, the same Pool sending one job per stream (what a
  worker without the ``job-batch`` feature gets).

CPU per job: the worker's from /proc (all its threads), the load process's from
getrusage, both over the timed run only. Medians of the rounds. ``--json`` prints one
JSON line per row.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from procs import read_line, stop  # bench/plasmd/procs.py

ROOT = Path(__file__).resolve().parents[2]
HELLO = ROOT / "packages" / "plasm-exec" / "examples" / "build" / "hello.wasm"
BIN = Path(sys.executable).parent
CLK = os.sysconf("SC_CLK_TCK")
GOAL = 1000.0
CONCURRENCY = 64


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if k not in ("PYTHONDONTWRITEBYTECODE", "PHASE_HOME")}


class Worker:
    def __init__(self, root: Path, name: str) -> None:
        home = root / name
        subprocess.run([str(BIN / "plasmd"), "init", "-q", f"--home={home}",
                        "--listen=127.0.0.1:0"], env=env(), check=True)
        self.stderr = open(root / f"{name}.stderr", "wb")
        self.proc = subprocess.Popen([str(BIN / "plasmd"), "start", f"--home={home}", "--open"],
                                     stdout=subprocess.PIPE, stderr=self.stderr, env=env())
        started = read_line(self.proc, 60, "plasmd start")
        port = int(started["listen"][0].rsplit(":", 1)[1])
        self.peer = f"{started['node_id']}@127.0.0.1:{port}"

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK

    def close(self) -> None:
        stop(self.proc)
        self.stderr.close()


async def load_main(peer: str, jobs: int, max_batch: int, concurrency: int) -> None:
    """The load process: warm up, say ready, wait for go, run ``jobs`` jobs, report."""
    from phase_core.identity import Identity
    from plasmd.pool import Job, Pool
    from plasmd.submit import make_manifest

    ident = Identity.generate()
    module = HELLO.read_bytes()

    def job() -> Job:
        m = make_manifest(ident, module, b"Hello, World", argv=["hello.wasm"])
        return Job(m, {m["body"]["module"]: module, m["body"]["stdin"]: b"Hello, World"})

    linger = float(os.environ.get("BENCH_LINGER", "0.05"))  # the Pool's default
    async with Pool(ident, [peer], max_in_flight=CONCURRENCY, max_batch=max_batch,
                    linger_s=linger) as pool:
        warm = [job() for _ in range(2 * CONCURRENCY)]
        async for d in pool.map(warm):
            if d.error is not None:
                raise SystemExit(f"warm-up job failed: {d.error}")
        todo = iter([job() for _ in range(jobs)])
        print(json.dumps({"ready": True}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        errors: list[str] = []
        done = [0]
        lat: list[float] = []

        async def submitter() -> None:
            for j in todo:
                try:
                    t0 = time.perf_counter()
                    out = await (await pool.submit(j))
                    lat.append(time.perf_counter() - t0)
                    assert out.stdout == b"dlroW ,olleH", out.stdout
                    done[0] += 1
                except Exception as e:  # counted and reported, the run goes on
                    errors.append(f"{type(e).__name__}: {e}"[:200])

        stats0 = dict(pool.stats)
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        t = time.perf_counter()
        await asyncio.gather(*(submitter() for _ in range(concurrency)))
        dt = time.perf_counter() - t
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        stats = {k: v - stats0.get(k, 0) for k, v in pool.stats.items()}
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    print(json.dumps({"jobs": done[0], "errors": len(errors), "error_sample": errors[:3],
                      "seconds": dt, "client_cpu_s": cpu, "stats": stats,
                      "p50_ms": statistics.median(lat) * 1000 if lat else 0}), flush=True)


def one_run(root: Path, name: str, jobs: int, max_batch: int,
            concurrency: int = CONCURRENCY) -> dict[str, Any]:
    w = Worker(root, name)
    try:
        load = subprocess.Popen([sys.executable, __file__, "--load", w.peer, str(jobs),
                                 str(max_batch), str(concurrency)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, env=env())
        read_line(load, 300, "the load process")
        assert load.stdin is not None
        c0 = w.cpu_s()
        load.stdin.write(b"go\n")
        load.stdin.flush()
        res = read_line(load, 900, "the load process")
        res["worker_cpu_s"] = w.cpu_s() - c0
        load.wait(60)
    finally:
        w.close()
    if res["errors"]:
        print(f"   {name}: {res['errors']} errors, e.g. {res['error_sample']}", file=sys.stderr)
    n = max(1, res["jobs"])
    res["jobs_per_s"] = res["jobs"] / res["seconds"]
    res["worker_ms"] = res["worker_cpu_s"] / n * 1000
    res["client_ms"] = res["client_cpu_s"] / n * 1000
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer jobs and rounds")
    ap.add_argument("--json", action="store_true", help="one JSON line per row")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--jobs", type=int, default=None)
    ap.add_argument("--load", nargs=4, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.load:
        asyncio.run(load_main(a.load[0], int(a.load[1]), int(a.load[2]), int(a.load[3])))
        return
    rounds = a.rounds or (1 if a.quick else 3)
    jobs = a.jobs or (600 if a.quick else 3000)
    modes = {"batching": 64, "one-per-stream": 1}
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    lone: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        for r in range(rounds):
            for mode, mb in modes.items():
                runs[mode].append(one_run(Path(tmp), f"{mode}-{r}", jobs, mb))
                lone[mode].append(one_run(Path(tmp), f"{mode}-lone-{r}", jobs // 4, mb, 1))
    keys = ("jobs_per_s", "worker_ms", "client_ms", "p50_ms")
    med = {m: {k: statistics.median(x[k] for x in rs) for k in keys} for m, rs in runs.items()}
    med1 = {m: {k: statistics.median(x[k] for x in rs) for k in keys} for m, rs in lone.items()}
    ref = med["one-per-stream"]["jobs_per_s"]
    rows = []
    for mode in modes:
        ours = med[mode]["jobs_per_s"]
        stats = runs[mode][-1]["stats"]
        rows.append({"row": f"throughput-64-{mode}",
                     "measurement": f"hello jobs/s at {CONCURRENCY} concurrent submitters, "
                                    f"Pool, {mode}",
                     "ours_jobs_per_s": round(ours, 1),
                     "reference": f"one-per-stream {ref:.1f} jobs/s",
                     "ratio": round(ours / ref, 2), "goal": "≥ 1000 jobs/s",
                     "met": ours >= GOAL,
                     "worker_cpu_ms_per_job": round(med[mode]["worker_ms"], 2),
                     "client_cpu_ms_per_job": round(med[mode]["client_ms"], 2),
                     "jobs_per_batch": round(stats.get("batched_jobs", 0)
                                             / max(1, stats.get("batches", 0)), 1),
                     "p50_ms": round(med[mode]["p50_ms"], 2),
                     "rounds": rounds, "jobs": jobs})
    ref1 = med1["one-per-stream"]
    ours1 = med1["batching"]
    rows.append({"row": "lone-job-batching",
                 "measurement": "hello jobs/s with 1 submitter (one job at a time), Pool "
                                "with batching: a lone job is never held",
                 "ours_jobs_per_s": round(ours1["jobs_per_s"], 1),
                 "reference": f"one-per-stream {ref1['jobs_per_s']:.1f} jobs/s "
                              f"(p50 {ref1['p50_ms']:.2f} ms; ours {ours1['p50_ms']:.2f} ms)",
                 # latency, not rate: the ratio is one-per-stream p50 / batching p50
                 "ratio": round(ref1["p50_ms"] / ours1["p50_ms"], 2),
                 "goal": "no added latency (p50 ratio ≥ 0.9)",
                 "met": ref1["p50_ms"] >= 0.9 * ours1["p50_ms"],
                 "p50_ms": round(ours1["p50_ms"], 2), "rounds": rounds, "jobs": jobs // 4})
    if a.json:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False))
        return
    print(f"hello at {CONCURRENCY} concurrent submitters, {jobs} jobs, median of {rounds} "
          f"round(s)")
    print(f"   {'mode':16s} {'jobs/s':>8s} {'ratio':>6s} {'worker ms/job':>14s} "
          f"{'client ms/job':>14s} {'jobs/batch':>10s}")
    for row, mode in zip(rows, modes, strict=False):
        print(f"   {mode:16s} {row['ours_jobs_per_s']:8.0f} {row['ratio']:6.2f} "
              f"{row['worker_cpu_ms_per_job']:14.2f} {row['client_cpu_ms_per_job']:14.2f} "
              f"{row['jobs_per_batch']:10.1f}")
    print(f"   goal ≥ {GOAL:.0f} jobs/s: " + ("met" if rows[0]["met"] else "MISSED"))
    lone_row = rows[-1]
    print(f"one submitter, {jobs // 4} jobs: batching {lone_row['ours_jobs_per_s']:.0f} jobs/s "
          f"vs {lone_row['reference']}: ratio {lone_row['ratio']:.2f} "
          f"({'met' if lone_row['met'] else 'MISSED'}: {lone_row['goal']})")


if __name__ == "__main__":
    main()
