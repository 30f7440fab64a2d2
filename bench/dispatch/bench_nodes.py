"""Dispatch throughput vs worker count: hello jobs/s with 1, 2, 4 and 8 workers.

    .venv/bin/python bench/dispatch/bench_nodes.py [--jobs=N] [--rounds=R] [--counts=1,2,4,8]

For each count, that many real workers (``plasmd start --open`` on 127.0.0.1, fresh
homes, each with its default guest threads) and one ``plasmd dispatch`` process
fed ``--jobs`` signed hello.wasm job records (each with its own stdin) from a file;
the clock runs from the dispatch's start to its exit, so the dispatcher's own start
(imports, key, connecting to every worker) is in it. Every receipt is verified by
the dispatcher. Prints jobs/s per count (median of the rounds), the ratio to one
worker, and the CPU seconds the workers and the dispatcher used per job. Workers
are started before the clock; rounds interleave the counts.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent
HELLO = ROOT / "packages" / "plasm-exec" / "examples" / "build" / "hello.wasm"
CLK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def make_jobs(home: Path, n: int, where: Path) -> Path:
    from phase_core import identity
    from plasmd.submit import make_manifest

    me = identity.load(home / "key")
    module = HELLO.read_bytes()
    where.mkdir(parents=True, exist_ok=True)
    out = where / "jobs.jsonl"
    with open(out, "w") as f:
        for i in range(n):
            stdin = f"bench job {i} {time.time_ns()}".encode()
            path = where / f"{i}.in"
            path.write_bytes(stdin)
            env = make_manifest(me, module, stdin, argv=["hello.wasm"])
            f.write(json.dumps({"v": 1, "type": "job", "manifest": env,
                                "module_path": str(HELLO), "stdin_path": str(path)}) + "\n")
    return out


def one(root: Path, count: int, jobs: int, r: int) -> tuple[float, float, float]:
    """(jobs/s, worker CPU s per job, dispatcher CPU s per job) for one run."""
    from tests.dispatch.conftest import start_workers
    from tests.plasmd.conftest import init_home

    base = root / f"r{r}-n{count}"
    base.mkdir()
    client = base / "client"
    init_home(client)
    jobs_file = make_jobs(client, jobs, base / "in")
    nodes = start_workers(base, count)
    try:
        before = sum(cpu_s(n.proc.pid) for n in nodes)
        t0 = time.perf_counter()
        p = subprocess.Popen([str(BIN / "plasmd"), "dispatch", f"--home={client}",
                              "--peer=" + ",".join(n.peer for n in nodes),
                              f"--jobs={jobs_file}", "-q"],
                             stderr=subprocess.PIPE)
        # the dispatcher's CPU, read from its own accounting once it exits
        _, status, usage = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            raise SystemExit(f"dispatch exited {code}: "
                             f"{p.stderr.read().decode()[-2000:] if p.stderr else ''}")
        workers = sum(cpu_s(n.proc.pid) for n in nodes) - before
        return jobs / wall, workers / jobs, (usage.ru_utime + usage.ru_stime) / jobs
    finally:
        for n in nodes:
            n.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--counts", default="1,2,4,8")
    a = ap.parse_args()
    counts = [int(x) for x in a.counts.split(",")]
    got: dict[int, list[tuple[float, float, float]]] = {c: [] for c in counts}
    with tempfile.TemporaryDirectory(prefix="bench-dispatch-") as d:
        for r in range(a.rounds):
            for c in counts:
                got[c].append(one(Path(d), c, a.jobs, r))
                print(f"round {r + 1} workers {c}: {got[c][-1][0]:.0f} jobs/s",
                      file=sys.stderr)
    base = statistics.median(x[0] for x in got[counts[0]])
    print(f"{a.jobs} hello jobs, median of {a.rounds} rounds, {os.cpu_count()} cores")
    print("| workers | jobs/s | vs 1 | worker CPU ms/job | dispatcher CPU ms/job |")
    print("|---:|---:|---:|---:|---:|")
    for c in counts:
        rate = statistics.median(x[0] for x in got[c])
        wcpu = statistics.median(x[1] for x in got[c]) * 1000
        dcpu = statistics.median(x[2] for x in got[c]) * 1000
        print(f"| {c} | {rate:.0f} | {rate / base:.2f} | {wcpu:.1f} | {dcpu:.1f} |")


if __name__ == "__main__":
    main()
