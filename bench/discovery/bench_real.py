"""Discovery on real processes, next to the simulator.

    python bench/discovery/bench_real.py [--nodes=20] [--lookups=200] [--mdns-trials=10]

1. A DHT of N plasmd processes (internet mode) on 127.0.0.1, joined through one
   bootstrap node: FIND_NODE lookup latency p50/p99 and hop counts from a fresh
   client, and GET latency for node records.
2. The simulator (the same sans-I/O classes) with the same N, in the same run: its
   hop counts next to the real network's.
3. mDNS across a veth pair between two network namespaces (made and removed here;
   needs root and iproute2): time from browse start to the first verified record.

Only loopback and namespaces this bench creates carry traffic.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]

import simnet  # noqa: E402

from phase_core.aio.dht import DhtService  # noqa: E402
from phase_core.identity import Identity  # noqa: E402
from phase_core.protocol.dht import node_key  # noqa: E402
from tests.plasmd.conftest import prepare_home, start_node  # noqa: E402


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * (len(xs) - 1) + 0.5))]


def real_dht(n: int, lookups: int, tmp: Path) -> dict[str, object]:
    env = {"PHASE_DHT_UPKEEP_S": "1"}
    first = tmp / "n0"
    prepare_home(first, mode="internet", mdns=False)
    nodes = [start_node(first, env=env)]
    try:
        boot = f"127.0.0.1:{nodes[0].port}"
        homes = []
        for i in range(1, n):
            h = tmp / f"n{i}"
            prepare_home(h, mode="internet", mdns=False, bootstrap=(boot,))
            homes.append(h)
        with ThreadPoolExecutor(8) as pool:
            nodes += list(pool.map(lambda h: start_node(h, env=env), homes))
        ids = [x.node_id for x in nodes]
        time.sleep(3)  # a few upkeep rounds

        async def run() -> dict[str, object]:
            svc = DhtService(Identity.generate(), [])
            rng = random.Random(7)
            try:
                await svc.bootstrap([boot])
                lat, hops, get_lat, found = [], [], [], 0
                for _ in range(lookups):
                    t = time.perf_counter()
                    lk = await svc.lookup(rng.getrandbits(256))
                    lat.append(time.perf_counter() - t)
                    hops.append(lk.hops)
                for _ in range(max(20, lookups // 4)):
                    want = rng.choice(ids)
                    t = time.perf_counter()
                    recs = await svc.get_records(node_key(want), limit=1)
                    get_lat.append(time.perf_counter() - t)
                    found += any(v.body["node_id"] == want for v in recs)
                return {"lookup_p50_ms": 1000 * pct(lat, 0.5),
                        "lookup_p99_ms": 1000 * pct(lat, 0.99),
                        "hops_p50": statistics.median(hops), "hops_max": max(hops),
                        "get_p50_ms": 1000 * pct(get_lat, 0.5),
                        "get_p99_ms": 1000 * pct(get_lat, 0.99),
                        "get_success": found / len(get_lat)}
            finally:
                await svc.close()
        return asyncio.run(run())
    finally:
        for x in nodes:
            x.stop()


def simulated(n: int, lookups: int) -> dict[str, object]:
    base = simnet.built(n, publishers=n)
    return simnet.scenario(base, lookups=lookups)


def mdns_over_veth(trials: int) -> list[float] | str:
    import subprocess

    from tests.netns import Net, _netns_usable

    why = _netns_usable()
    if why is not None:
        return f"skipped: {why}"
    peer = str(ROOT / "tests" / "phase_discover" / "mdns_peer.py")
    net = Net()
    times: list[float] = []
    try:
        net.up()
        adv = net.spawn("a", sys.executable, peer, "advertise", "--ip=10.201.1.1")
        assert adv.stdout is not None
        adv.stdout.readline()
        try:
            for _ in range(trials):
                r = net.run("b", sys.executable, peer, "browse", "--ip=10.201.1.2", "--timeout=2")
                found = [json.loads(x) for x in r.stdout.splitlines() if '"found"' in x]
                if found:
                    times.append(float(found[0]["elapsed_s"]))
        finally:
            try:
                adv.communicate(input="", timeout=10)
            except subprocess.TimeoutExpired:
                adv.kill()
    finally:
        net.down()
    return times


def main(argv: list[str]) -> int:
    opts = dict(a.lstrip("-").split("=", 1) for a in argv if "=" in a)
    n = int(opts.get("nodes", 20))
    lookups = int(opts.get("lookups", 200))
    trials = int(opts.get("mdns-trials", 10))
    print(f"discovery bench: {n} plasmd processes on 127.0.0.1, log2(N) = {math.log2(n):.2f}")
    with tempfile.TemporaryDirectory() as d:
        real = real_dht(n, lookups, Path(d))
    sim = simulated(n, lookups)
    print(f"{'':28}{'real (20 processes)':>22}{'simulator':>14}")
    print(f"{'lookup latency p50 / p99':28}{real['lookup_p50_ms']:>10.1f} / "
          f"{real['lookup_p99_ms']:.1f} ms{'':>3}{sim['time_median_s'] * 1000:>8.0f} ms (sim)")
    print(f"{'hops p50 (max / p90)':28}{real['hops_p50']!s:>14} ({real['hops_max']}){'':>5}"
          f"{sim['hops_median']!s:>6} ({sim['hops_p90']})")
    print(f"{'GET node record p50 / p99':28}{real['get_p50_ms']:>10.1f} / "
          f"{real['get_p99_ms']:.1f} ms")
    print(f"{'GET success':28}{real['get_success']:>14.0%}{sim['success']:>14.0%}")
    m = mdns_over_veth(trials)
    if isinstance(m, str):
        print(f"mDNS across a veth pair: {m}")
    elif m:
        print("mDNS across a veth pair: first verified record after "
              f"p50 {1000 * pct(m, 0.5):.0f} ms, max {1000 * max(m):.0f} ms "
              f"over {len(m)} of {trials} browses")
    else:
        print(f"mDNS across a veth pair: nothing found in {trials} browses")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
