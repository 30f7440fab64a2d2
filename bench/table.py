"""Every speed goal of the project in one run: each bench prints its rows as JSON lines
(`--json`), this script runs them one after another and prints one table with ratios.

    .venv/bin/python bench/table.py [--quick] [--only NAME,...]

The benches measure side by side inside their own run (interleaved samples of ours and
of the reference), so each ratio compares numbers taken seconds apart. Run it on a quiet
machine: `uptime` is printed before and after so a reader can judge the noise.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name -> (the bench's command line without --json, what --quick adds to it).
BENCHES: dict[str, tuple[list[str], list[str]]] = {
    "plasm-exec": (["bench/plasm_exec/bench.py", "--only-cold"], ["--runs", "10"]),
    "submit": (["bench/plasmd/bench_submit.py"], ["--runs", "5"]),
    "worker": (["bench/plasmd/bench_plasmd.py", "--only", "1,3"], ["--quick"]),
    "batch": (["bench/plasmd/bench_batch.py"], ["--quick"]),
}


def load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def run_bench(name: str, argv: tuple[list[str], list[str]], quick: bool
              ) -> list[dict[str, object]]:
    cmd = [sys.executable, *argv[0], "--json"] + (argv[1] if quick else [])
    t = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    took = time.monotonic() - t
    rows = []
    for line in proc.stdout.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and "row" in rec:
            rows.append(rec)
    if proc.returncode != 0 or not rows:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        print(f"bench {name} failed (exit {proc.returncode}):", *tail, sep="\n  ", file=sys.stderr)
    print(f"bench {name}: {len(rows)} rows in {took:.0f} s", file=sys.stderr)
    return rows


def fmt(value: object, unit: str) -> str:
    if isinstance(value, (int, float)):
        return f"{value:.1f} {unit}" if unit else f"{value:.2f}"
    return "—" if value is None else str(value)


def ours(rec: dict[str, object]) -> str:
    for key, unit in (("ours_ms", "ms"), ("ours_jobs_per_s", "jobs/s")):
        if key in rec:
            return fmt(rec[key], unit)
    return "—"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer samples (a smoke run)")
    ap.add_argument("--only", default=",".join(BENCHES), help="comma-separated bench names")
    a = ap.parse_args()
    names = [n for n in a.only.split(",") if n]
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        ap.error(f"unknown bench {', '.join(unknown)}; known: {', '.join(BENCHES)}")
    before = load()
    rows: list[dict[str, object]] = []
    for name in names:
        rows += run_bench(name, BENCHES[name], a.quick)
    print(f"\nload average before {before}, after {load()}; {os.cpu_count()} cores\n")
    print("| measurement | ours | reference | ratio | goal | met |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        ref = str(r.get("reference") or "—")
        if isinstance(r.get("reference_ms"), (int, float)):
            ref += f" ({fmt(r['reference_ms'], 'ms')})"
        ratio = r.get("ratio")
        ratio_s = f"{ratio:.2f} ×" if isinstance(ratio, (int, float)) else "—"
        met = {True: "yes", False: "**no**"}.get(r.get("met"), "—")  # type: ignore[arg-type]
        print(f"| {r.get('measurement', r['row'])} | {ours(r)} | {ref} | {ratio_s} "
              f"| {r.get('goal') or '—'} | {met} |")
    return 0 if rows else 1


if __name__ == "__main__":
    raise SystemExit(main())
