"""The DHT at scale: lookup success, hops and messages vs log2(N), with churn and liars.

    .venv/bin/python bench/discovery/bench_discovery.py [--nodes=10000] [--lookups=1000]

Builds one network by joining nodes one at a time (each looks itself up and
refreshes a few buckets), stores node records of 1,000 random nodes, then runs
each scenario on a copy of that network. All code under test is the real
sans-I/O DHT (see simnet.py); only the wire is simulated (latency 10-120 ms,
1 % loss, 1 s timeout). Deterministic: same seed, same table.
"""

from __future__ import annotations

import json
import sys
import time

import simnet

SCENARIOS = [
    ("0 % churn", {"churn": 0.0}),
    ("10 % churn", {"churn": 0.10}),
    ("30 % churn", {"churn": 0.30}),
    ("10 % liars", {"liars": 0.10}),
    ("10 % churn + 10 % liars", {"churn": 0.10, "liars": 0.10}),
]


def main(argv: list[str]) -> int:
    opts = dict(a.lstrip("-").split("=", 1) for a in argv if "=" in a)
    n = int(opts.get("nodes", 10_000))
    lookups = int(opts.get("lookups", 1000))
    t0 = time.monotonic()
    base = simnet.built(n, publishers=1000)
    print(f"# built {n} nodes in {time.monotonic() - t0:.0f} s", file=sys.stderr)
    rows = []
    print(f"{'scenario':26} {'live':>6} {'log2N':>6} {'success':>8} {'hops p50':>8} "
          f"{'p90':>4} {'msgs/lookup':>11} {'forged seen':>11} {'accepted':>8}")
    for name, kw in SCENARIOS:
        r = simnet.scenario(base, lookups=lookups, **kw)
        rows.append({"scenario": name, **r})
        print(f"{name:26} {r['nodes']:>6} {r['log2_n']:>6} {r['success']:>8.2%} "
              f"{r['hops_median']!s:>8} {r['hops_p90']!s:>4} {r['messages_mean']:>11} "
              f"{r['forged_rejected']:>11} {r['forged_accepted']:>8}", flush=True)
    print(json.dumps(rows), file=sys.stderr)
    print(f"# total {time.monotonic() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
