"""The DHT at scale: lookup success, hops, messages and time, with churn and liars.

    .venv/bin/python bench/discovery/bench_discovery.py [--nodes=10000] [--lookups=1000]
        [--sampled [--clone]] [--rows=0,1,...] [--paths=2] [--quorum=2] [--no-adaptive]

Builds one network (by joining nodes one at a time, each looking itself up and
refreshing a few buckets; or, with ``--sampled``, by filling every bucket from
the whole id space at once: see simnet.Sim.build_sampled), stores node records
of 1,000 random nodes, then runs each scenario on a copy of that network
(``--sampled`` without ``--clone`` runs them on the network itself, in order, to
save the copy at 100,000 nodes: liars are undone after their row, churn is not,
so churn rows go last). All code under test is the real
sans-I/O DHT (see simnet.py); only the wire is simulated (latency 10-120 ms, 1 %
loss, timeouts adaptive from observed RTT, 1 s at most). A GET ends once
``--quorum`` holders returned the wanted record (0: run the lookup to the end).
Deterministic: same seed, same table.
"""

from __future__ import annotations

import json
import sys
import time

import simnet

SCENARIOS = [
    ("0 % churn", {}),
    ("10 % churn", {"churn": 0.10}),
    ("30 % churn", {"churn": 0.30}),
    ("10 % liars", {"liars": 0.10}),
    ("10 % churn + 10 % liars", {"churn": 0.10, "liars": 0.10}),
    ("20 % liars", {"liars": 0.20}),
    ("30 % churn + 10 % liars", {"churn": 0.30, "liars": 0.10}),
    ("50 % churn, first holders dead", {"churn": 0.50, "kill_holders": True}),
]


def main(argv: list[str]) -> int:
    opts = dict(([*a.lstrip("-").split("=", 1), ""])[:2] for a in argv)
    n = int(opts.get("nodes", 10_000))
    lookups = int(opts.get("lookups", 1000))
    sampled = "sampled" in opts
    clone = "clone" in opts or not sampled
    rows_wanted = [int(x) for x in opts["rows"].split(",")] if "rows" in opts \
        else list(range(len(SCENARIOS)))
    sim_opts = {"paths": int(opts.get("paths", 2)), "quorum": int(opts.get("quorum", 2)),
                "adaptive": "no-adaptive" not in opts}
    t0 = time.monotonic()
    base = simnet.built(n, publishers=1000, sampled=sampled, **sim_opts)
    print(f"# built {n} nodes ({'sampled' if sampled else 'joined'}) in "
          f"{time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
    rows = []
    print(f"{'scenario':31} {'live':>6} {'success':>8} {'hops p50':>8} {'msgs/lookup':>11} "
          f"{'time p50':>8} {'p90':>6} {'forged seen':>11} {'accepted':>8}", flush=True)
    for i in rows_wanted:
        name, kw = SCENARIOS[i]
        t1 = time.monotonic()
        r = simnet.scenario(base, lookups=lookups, clone=clone, **kw)
        rows.append({"scenario": name, **r, "wall_s": round(time.monotonic() - t1, 1)})
        print(f"{name:31} {r['nodes']:>6} {r['success']:>8.2%} {r['hops_median']!s:>8} "
              f"{r['messages_mean']:>11} {r['time_median_s']:>7}s {r['time_p90_s']:>5}s "
              f"{r['forged_rejected']:>11} {r['forged_accepted']:>8}", flush=True)
    print(json.dumps(rows), file=sys.stderr)
    print(f"# total {time.monotonic() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
