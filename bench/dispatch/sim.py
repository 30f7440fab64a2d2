"""Dispatching many jobs over many nodes, simulated: completion time, wasted work and the
share of wrong results accepted, with N replicas and a quorum of K, against the model.

    .venv/bin/python bench/dispatch/sim.py [--quick] [--nodes=10000] [--jobs=100000]
        [--seed=1] [--rows=0,1,...] [--PARAM=VALUE ...]

Each row is one run of ``engine.Dispatcher`` on a fresh network built from the same seed
(see world.py for the network, engine.py for the dispatcher, model.py for the model).
``--quick``: 1,000 nodes, 10,000 jobs. ``--PARAM=VALUE`` sets a field of
``world.Params`` for every row (a row's own settings win); ``--rows=custom`` runs one
row from the options alone. The table goes to stdout, one JSON object per row to stderr.
Deterministic: same options, same table.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import model
from engine import Dispatcher
from world import REASONS, Params

HOUR = 3600.0
R3 = {"replicas": 3, "quorum": 2}
SCENARIOS: list[tuple[str, dict[str, Any]]] = [
    ("N=1", {}),
    ("N=3 K=2", R3),
    ("N=3 K=2 colluding", {**R3, "collude": 1.0}),
    ("N=1 churn 1 h", {"session_s": HOUR}),
    ("N=3 K=2 churn 1 h", {**R3, "session_s": HOUR}),
    ("N=3 K=2 colluding churn 1 h", {**R3, "collude": 1.0, "session_s": HOUR}),
    ("N=3 K=2 launch K", {**R3, "launch": "quorum"}),
    ("N=3 K=2 colluding launch K", {**R3, "collude": 1.0, "launch": "quorum"}),
    ("N=3 K=2 extend", {**R3, "dispute": "extend"}),
    ("N=3 K=2 reexec", {**R3, "dispute": "reexec"}),
    ("N=3 K=2 colluding avoid", {**R3, "collude": 1.0, "avoid": True}),
    ("N=3 K=2 avoid", {**R3, "avoid": True}),
    ("N=3 K=2 half colluding, lazy", {**R3, "collude": 0.5, "liar_speed": 0.1}),
    ("N=5 K=3 colluding", {"replicas": 5, "quorum": 3, "collude": 1.0}),
    ("N=3 K=2 half colluding, lazy, avoid",
     {**R3, "collude": 0.5, "liar_speed": 0.1, "avoid": True}),
    ("N=3 K=2 churn 10 min", {**R3, "session_s": 600.0}),
    ("N=1 short jobs", {"work_median_s": 0.5}),
    ("N=3 K=2 short jobs", {**R3, "work_median_s": 0.5}),
]


def pct(xs: list[float], q: float) -> float:
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else 0.0


def summary(d: Dispatcher, wall_s: float, cpu_s: float = 0.0) -> dict[str, Any]:
    p, jobs = d.p, d.jobs
    n = len(jobs)
    outcomes = {k: sum(j.outcome == k for j in jobs) for k in
                ("right", "wrong", "disputed", "failed")}
    disputed = sum(j.disputed for j in jobs)
    p_eff = d.liar_execs / max(1, sum(d.execs.values()))  # the share of runs liars got
    m = model.outcome(p.liars, p.replicas, p.quorum, lie_rate=p.lie_rate, collude=p.collude,
                      dispute=p.dispute, cap=p.max_attempts)
    me = model.outcome(p_eff, p.replicas, p.quorum, lie_rate=p.lie_rate, collude=p.collude,
                       dispute=p.dispute, cap=p.max_attempts)
    loss = model.lost_per_attempt(p.session_s, p.work_median_s,
                                  (p.work_sigma ** 2 + p.speed_sigma ** 2) ** 0.5)
    execs = sum(d.execs.values())
    runs = m["results"] if p.launch == "all" else m["draws"]
    m_execs = (runs + (m["disputed"] if p.dispute == "reexec" else 0)) / (1 - loss)
    lat = sorted(j.t_end - j.t_first for j in jobs)
    ideal = sum(j.work for j in jobs)
    return {
        **{k: getattr(p, k) for k in ("nodes", "jobs", "replicas", "quorum", "liars", "collude",
                                      "session_s", "launch", "dispute", "avoid", "seed")},
        "outcomes": outcomes,
        "wrong": outcomes["wrong"] / n, "wrong_ci": model.wilson(outcomes["wrong"], n),
        "wrong_model": m["wrong"], "wrong_z": model.zscore(outcomes["wrong"], n, m["wrong"]),
        "liar_share_of_runs": p_eff, "wrong_model_eff": me["wrong"],
        "wrong_z_eff": model.zscore(outcomes["wrong"], n, me["wrong"]),
        "disputed_model_eff": me["disputed"],
        "disputed_z_eff": model.zscore(disputed, n, me["disputed"]),
        "disputed": disputed / n, "disputed_ci": model.wilson(disputed, n),
        "disputed_model": m["disputed"], "disputed_z": model.zscore(disputed, n, m["disputed"]),
        "execs_per_job": execs / n, "execs_model": m_execs,
        "extra": {r: d.execs[r] / n for r in REASONS if r != "first"},
        "dials_failed": d.dials_failed, "deaths": d.deaths, "banned": len(d.banned),
        "banned_liars": sum(d.nodes[i].liar for i in d.banned),
        "latency_p50_s": pct(lat, 0.50), "latency_p99_s": pct(lat, 0.99),
        "makespan_s": max(j.t_end for j in jobs),
        "done_99_s": pct(sorted(j.t_end for j in jobs), 0.99),
        "work_ratio": sum(d.seconds.values()) / ideal,
        "work_split": {r: d.seconds[r] / ideal for r in REASONS},
        "lost_ratio": d.wasted_lost / ideal, "cancelled_ratio": d.wasted_cancelled / ideal,
        "wall_s": round(wall_s, 1), "cpu_s": round(cpu_s, 1),
    }


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else ("1" if a == 0 else "inf")


def correctness_text(name: str, r: dict[str, Any]) -> str:
    lo, hi = r["wrong_ci"]
    dlo, dhi = r["disputed_ci"]
    return (f"{name:36} {r['liar_share_of_runs']:6.2%} | {r['wrong']:7.3%} "
            f"[{lo:.3%}, {hi:.3%}] {r['wrong_model']:7.3%} {r['wrong_model_eff']:7.3%} "
            f"{ratio(r['wrong'], r['wrong_model_eff']):>5} | {r['disputed']:7.3%} "
            f"[{dlo:.3%}, {dhi:.3%}] {r['disputed_model']:7.3%} {r['disputed_model_eff']:7.3%} "
            f"{ratio(r['disputed'], r['disputed_model_eff']):>5}")


CORRECTNESS = (f"{'row':36} {'liars':>6} | {'wrong':>7} {'95 % CI':>18} {'model':>7} "
               f"{'m(runs)':>7} {'ratio':>5} | {'disputed':>7} {'95 % CI':>18} {'model':>7} "
               f"{'m(runs)':>7} {'ratio':>5}")


def cost_text(name: str, r: dict[str, Any]) -> str:
    ex = r["extra"]
    return (f"{name:36} {r['execs_per_job']:5.3f} {r['execs_model']:5.3f} "
            f"{ex['replica']:5.3f} {ex['churn']:5.3f} {ex['dispute']:5.3f} | "
            f"{r['work_ratio']:5.2f} {r['lost_ratio']:5.3f} "
            f"{r['cancelled_ratio']:5.3f} {r['dials_failed']:>5} | {r['latency_p50_s']:5.3g} "
            f"{r['latency_p99_s']:5.3g} {r['done_99_s']:6.4g} {r['makespan_s']:6.4g} | "
            f"{r['wall_s']:5.0f} {r['cpu_s']:5.0f}")


COST = (f"{'row':36} {'runs/job':>5} {'model':>5} {'+repl':>5} {'+churn':>5} {'+disp':>5} | "
        f"{'work':>5} {'lost':>5} {'cancl':>5} {'dials':>5} | {'p50 s':>5} {'p99 s':>5} "
        f"{'99 % in':>6} {'all in':>6} | {'wall':>5} {'cpu':>5}")


USAGE = 64  # docs/conventions.md


class UsageError(ValueError):
    pass


def parse(argv: list[str]) -> tuple[dict[str, Any], list[int] | None]:
    fields = {f.name: f for f in dataclasses.fields(Params)}
    base: dict[str, Any] = {}
    rows: list[int] | None = list(range(len(SCENARIOS)))
    for arg in argv:
        if not arg.startswith("--"):
            raise UsageError(f"unexpected argument {arg!r} (options are --NAME=VALUE)")
        key, _, val = arg[2:].partition("=")
        key = key.replace("-", "_")
        if key == "quick":
            base.setdefault("nodes", 1000)
            base.setdefault("jobs", 10_000)
        elif key == "rows":
            if val != "custom" and not all(x.isdigit() for x in val.split(",")):
                raise UsageError(f"--rows takes row numbers (0,1,...) or custom, not {val!r}")
            rows = None if val == "custom" else [int(x) for x in val.split(",")]
        elif key in fields:
            kind = type(fields[key].default)
            try:
                base[key] = (val in ("", "1", "true", "yes")) if kind is bool else kind(val)
            except ValueError:
                raise UsageError(f"--{key} wants a {kind.__name__}, not {val!r}") from None
        else:
            raise UsageError(f"unknown option --{key} (see the fields of world.Params)")
    return base, rows


def main(argv: list[str]) -> int:
    try:
        base, rows = parse(argv)
        if rows is not None and not all(0 <= i < len(SCENARIOS) for i in rows):
            raise UsageError(f"--rows takes numbers from 0 to {len(SCENARIOS) - 1}, or custom")
        todo = [("custom", {})] if rows is None else [SCENARIOS[i] for i in rows]
        for _, kw in todo:
            Params(**{**base, **kw}).check()
    except (UsageError, ValueError, TypeError) as e:
        print(f"sim.py: {e}", file=sys.stderr)
        return USAGE
    print(CORRECTNESS, flush=True)
    t0 = time.monotonic()
    costs = []
    for name, kw in todo:
        p = Params(**{**base, **kw})
        t1, c1 = time.monotonic(), time.process_time()
        d = Dispatcher(p).run()
        r = summary(d, time.monotonic() - t1, time.process_time() - c1)
        print(correctness_text(name, r), flush=True)
        costs.append(cost_text(name, r))
        print(json.dumps({"row": name, **r}), file=sys.stderr, flush=True)
    print()
    print(COST)
    print("\n".join(costs), flush=True)
    print(f"# {len(todo)} rows in {time.monotonic() - t0:.0f} s ({time.process_time():.0f} s "
          "of CPU)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

