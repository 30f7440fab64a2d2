"""Batching: hello jobs/s and CPU per job at 64 concurrent submitters, with and without.

    .venv/bin/python bench/plasmd/bench_batch.py [--quick] [--json] [--rounds=N]
        [--before DIR] [--threads] [--nodes=N]

A real worker (``plasmd start --open --listen=127.0.0.1:0`` in a throw-away home) and
one load process (this script with ``--load``): 64 concurrent asyncio submitters, each
awaiting ``plasmd.pool.Pool.submit`` of its next job, on one ``Pool`` (one warm
connection). Manifests are signed before the clock starts; every receipt is verified.
Two modes, interleaved in rounds, each on a fresh worker:

- ``batching``: the Pool batches queued jobs (up to 64 per stream, Nagle's rule);
- ``one-per-stream``: ``max_batch=1``, the same Pool sending one job per stream (what a
  worker without the ``job-batch`` feature gets).

CPU per job: the worker's from /proc (all its threads, and split: its event loop's
thread, the rest), the load process's from getrusage, both over the timed run only;
UDP datagrams per job from /proc/net/snmp (both processes, loopback: each datagram is
counted once sent and once received). Medians of the rounds. ``--json`` prints one
JSON line per row. ``--before DIR`` also runs every round against the sources of an
earlier checkout (``git archive <commit> | tar -x -C DIR``; its packages go first on
``PYTHONPATH``, for the worker and the load process), interleaved with ours, and adds
its numbers to each row (``before_*``). ``--nodes N`` starts N workers (N nodes, each
its own process, on this host) for each run and gives the Pool all of them: what N
worker processes would reach on these cores (docs/performance.md); CPU per job is
then summed over the workers.
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

from procs import children_cpu_s, cpu_s, read_line, stop  # bench/plasmd/procs.py

ROOT = Path(__file__).resolve().parents[2]
HELLO = ROOT / "packages" / "plasm-exec" / "examples" / "build" / "hello.wasm"
BIN = Path(sys.executable).parent
GOAL = 1000.0
CONCURRENCY = 64


def env(tree: Path | None = None, extra: dict[str, str] | None = None) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items()
         if k not in ("PYTHONDONTWRITEBYTECODE", "PHASE_HOME")}
    e.update(extra or {})
    if tree is not None:
        e["PYTHONPATH"] = os.pathsep.join(sorted(str(p) for p in
                                                 (tree / "packages").glob("*/src")))
    return e


def udp_datagrams() -> int:
    """Datagrams received on this host so far (loopback: equal to those sent)."""
    lines = [ln.split() for ln in Path("/proc/net/snmp").read_text().splitlines()
             if ln.startswith("Udp:")]
    return int(dict(zip(lines[0][1:], lines[1][1:], strict=True))["InDatagrams"])


class Worker:
    def __init__(self, root: Path, name: str, tree: Path | None = None,
                 extra: dict[str, str] | None = None) -> None:
        home = root / name
        subprocess.run([str(BIN / "plasmd"), "init", "-q", f"--home={home}",
                        "--listen=127.0.0.1:0"], env=env(tree), check=True)
        self.stderr = open(root / f"{name}.stderr", "wb")
        self.proc = subprocess.Popen([str(BIN / "plasmd"), "start", f"--home={home}", "--open"],
                                     stdout=subprocess.PIPE, stderr=self.stderr,
                                     env=env(tree, extra))
        started = read_line(self.proc, 60, "plasmd start")
        port = int(started["listen"][0].rsplit(":", 1)[1])
        self.peer = f"{started['node_id']}@127.0.0.1:{port}"

    def cpu_s(self, task: str = "") -> float:
        """CPU of the process (all threads) and of its job processes (plasmd.jobproc),
        or of one thread of the process (``task``: its id)."""
        if task:
            return cpu_s(f"/proc/{self.proc.pid}/task/{task}")
        return cpu_s(f"/proc/{self.proc.pid}") + children_cpu_s(self.proc.pid)

    def jobproc_cpu_s(self) -> float:
        """CPU of the job processes alone."""
        return children_cpu_s(self.proc.pid)

    def loop_cpu_s(self) -> float:
        """CPU of the worker's main thread: its event loop (networking, the job exchange)."""
        return self.cpu_s(str(self.proc.pid))

    def close(self) -> None:
        stop(self.proc)
        self.stderr.close()


async def load_main(peers: str, jobs: int, max_batch: int, concurrency: int) -> None:
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
    async with Pool(ident, peers.split(","), max_in_flight=CONCURRENCY, max_batch=max_batch,
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
            concurrency: int = CONCURRENCY, tree: Path | None = None,
            nodes: int = 1, extra: dict[str, str] | None = None) -> dict[str, Any]:
    ws: list[Worker] = []
    try:
        for i in range(nodes):
            ws.append(Worker(root, f"{name}-{i}" if nodes > 1 else name, tree, extra))
        peers = ",".join(w.peer for w in ws)
        load = subprocess.Popen([sys.executable, __file__, "--load", peers, str(jobs),
                                 str(max_batch), str(concurrency)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, env=env(tree))
        read_line(load, 300, "the load process")
        assert load.stdin is not None
        c0 = sum(w.cpu_s() for w in ws)
        l0 = sum(w.loop_cpu_s() for w in ws)
        j0 = sum(w.jobproc_cpu_s() for w in ws)
        u0 = udp_datagrams()
        load.stdin.write(b"go\n")
        load.stdin.flush()
        res = read_line(load, 900, "the load process")
        res["worker_cpu_s"] = sum(w.cpu_s() for w in ws) - c0
        res["loop_cpu_s"] = sum(w.loop_cpu_s() for w in ws) - l0
        res["jobproc_cpu_s"] = sum(w.jobproc_cpu_s() for w in ws) - j0
        res["datagrams"] = udp_datagrams() - u0
        load.wait(60)
    finally:
        for w in ws:
            w.close()
    if res["errors"]:
        print(f"   {name}: {res['errors']} errors, e.g. {res['error_sample']}", file=sys.stderr)
    n = max(1, res["jobs"])
    res["jobs_per_s"] = res["jobs"] / res["seconds"]
    res["worker_ms"] = res["worker_cpu_s"] / n * 1000
    res["loop_ms"] = res["loop_cpu_s"] / n * 1000
    res["jobproc_ms"] = res["jobproc_cpu_s"] / n * 1000
    res["client_ms"] = res["client_cpu_s"] / n * 1000
    res["datagrams_per_job"] = res["datagrams"] / n
    return res


def medians(rs: list[dict[str, Any]]) -> dict[str, float]:
    keys = ("jobs_per_s", "worker_ms", "loop_ms", "jobproc_ms", "client_ms", "p50_ms",
            "datagrams_per_job")
    return {k: statistics.median(x[k] for x in rs) for k in keys}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer jobs and rounds")
    ap.add_argument("--json", action="store_true", help="one JSON line per row")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--jobs", type=int, default=None)
    ap.add_argument("--before", metavar="DIR", type=Path,
                    help="also run every round against the sources in DIR (an earlier "
                         "checkout), interleaved, and report before -> after")
    ap.add_argument("--nodes", type=int, default=1,
                    help="workers (nodes, one process each) the Pool spreads jobs over")
    ap.add_argument("--threads", action="store_true",
                    help="also run every round with this checkout's guests on threads of "
                         "the node's process (job_processes = false), interleaved")
    ap.add_argument("--load", nargs=4, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.load:
        asyncio.run(load_main(a.load[0], int(a.load[1]), int(a.load[2]), int(a.load[3])))
        return
    rounds = a.rounds or (1 if a.quick else 3)
    jobs = a.jobs or (600 if a.quick else 3000)
    modes = {"batching": 64, "one-per-stream": 1}
    # version → (source tree or None for this checkout, environment for its workers)
    trees: dict[str, tuple[Path | None, dict[str, str]]] = {}
    if a.before is not None:
        trees["before"] = (a.before.resolve(), {})
    if a.threads:
        trees["threads"] = (None, {"PHASE_JOB_PROCESSES": "false"})
    trees["after"] = (None, {})
    runs = {(t, m): [] for t in trees for m in modes}  # type: dict[tuple[str, str], list[Any]]
    lone = {(t, m): [] for t in trees for m in modes}  # type: dict[tuple[str, str], list[Any]]
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        for r in range(rounds):
            for t, (tree, extra) in trees.items():
                for mode, mb in modes.items():
                    runs[t, mode].append(one_run(Path(tmp), f"{t}-{mode}-{r}", jobs, mb,
                                                 tree=tree, nodes=a.nodes, extra=extra))
                    lone[t, mode].append(one_run(Path(tmp), f"{t}-{mode}-lone-{r}", jobs // 4,
                                                 mb, 1, tree=tree, nodes=a.nodes, extra=extra))
    med = {k: medians(v) for k, v in runs.items()}
    med1 = {k: medians(v) for k, v in lone.items()}
    ref = med["after", "one-per-stream"]["jobs_per_s"]
    rows = []
    for mode in modes:
        m = med["after", mode]
        stats = runs["after", mode][-1]["stats"]
        on = f", {a.nodes} worker processes (nodes)" if a.nodes > 1 else ""
        row = {"row": f"throughput-64-{mode}" + (f"-{a.nodes}-nodes" if a.nodes > 1 else ""),
               "measurement": f"hello jobs/s at {CONCURRENCY} concurrent submitters, "
                              f"Pool, {mode}{on}",
               "ours_jobs_per_s": round(m["jobs_per_s"], 1),
               "reference": f"one-per-stream {ref:.1f} jobs/s",
               "ratio": round(m["jobs_per_s"] / ref, 2), "goal": "≥ 1000 jobs/s",
               "met": m["jobs_per_s"] >= GOAL,
               "worker_cpu_ms_per_job": round(m["worker_ms"], 2),
               "loop_cpu_ms_per_job": round(m["loop_ms"], 2),
               "job_process_cpu_ms_per_job": round(m["jobproc_ms"], 2),
               "client_cpu_ms_per_job": round(m["client_ms"], 2),
               "datagrams_per_job": round(m["datagrams_per_job"], 2),
               "jobs_per_batch": round(stats.get("batched_jobs", 0)
                                       / max(1, stats.get("batches", 0)), 1),
               "p50_ms": round(m["p50_ms"], 2), "rounds": rounds, "jobs": jobs}
        for other in ("before", "threads"):
            if other in trees:
                b = med[other, mode]
                row.update({f"{other}_jobs_per_s": round(b["jobs_per_s"], 1),
                            f"{other}_worker_cpu_ms_per_job": round(b["worker_ms"], 2),
                            f"{other}_loop_cpu_ms_per_job": round(b["loop_ms"], 2),
                            f"{other}_client_cpu_ms_per_job": round(b["client_ms"], 2),
                            f"{other}_datagrams_per_job": round(b["datagrams_per_job"], 2),
                            f"{other}_p50_ms": round(b["p50_ms"], 2)})
        rows.append(row)
    ref1 = med1["after", "one-per-stream"]
    ours1 = med1["after", "batching"]
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
          f"round(s)" + (f", {a.nodes} workers (nodes) per run" if a.nodes > 1 else ""))
    print(f"   {'version':7s} {'mode':16s} {'jobs/s':>7s} {'worker ms/job':>14s} "
          f"{'(its loop)':>10s} {'(job procs)':>11s} {'client ms/job':>14s} "
          f"{'datagrams':>9s} {'p50 ms':>7s}")
    for (t, mode), m in med.items():
        print(f"   {t:7s} {mode:16s} {m['jobs_per_s']:7.0f} {m['worker_ms']:14.2f} "
              f"{m['loop_ms']:10.2f} {m['jobproc_ms']:11.2f} {m['client_ms']:14.2f} "
              f"{m['datagrams_per_job']:9.2f} {m['p50_ms']:7.0f}")
    print(f"   goal ≥ {GOAL:.0f} jobs/s: " + ("met" if rows[0]["met"] else "MISSED"))
    for (t, mode), m in med1.items():
        print(f"   one submitter, {t:7s} {mode:16s} p50 {m['p50_ms']:6.2f} ms, "
              f"{m['jobs_per_s']:5.0f} jobs/s, worker {m['worker_ms']:5.2f} ms/job")
    lone_row = rows[-1]
    print(f"one submitter, {jobs // 4} jobs: batching {lone_row['ours_jobs_per_s']:.0f} jobs/s "
          f"vs {lone_row['reference']}: ratio {lone_row['ratio']:.2f} "
          f"({'met' if lone_row['met'] else 'MISSED'}: {lone_row['goal']})")


if __name__ == "__main__":
    main()
