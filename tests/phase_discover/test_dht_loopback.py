"""Twenty DHT node processes on 127.0.0.1 form a network from one bootstrap node; a fresh
phase-discover finds every node's record; with five nodes killed, lookups still work.

The nodes are ``phase_core.aio.dht_testnode`` processes until plasmd carries the DHT.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess

import pytest

from phase_core.aio.dht import DhtService
from phase_core.identity import Identity
from tests.conftest import script
from tests.phase_discover.conftest import Procs, dht_node

N = 20
DEADLINE_S = 15


def _discover(*args: str) -> tuple[int, list[dict[str, object]]]:
    r = subprocess.run([script("phase-discover"), "nodes", "--via=dht", *args,
                        f"--timeout={DEADLINE_S}"], capture_output=True, text=True,
                       timeout=DEADLINE_S + 20)
    return r.returncode, [json.loads(x) for x in r.stdout.splitlines()]


@pytest.mark.slow
def test_twenty_nodes_one_bootstrap_then_five_killed(procs: Procs) -> None:
    first = Procs.ready(dht_node(procs))
    boot = first["address"]
    rest = [dht_node(procs, boot, extra=("--runtime=wasmtime",) if i % 2 else ())
            for i in range(N - 1)]
    infos = [Procs.ready(p) for p in rest]
    everyone = {i["node_id"] for i in infos} | {first["node_id"]}
    assert len(everyone) == N

    code, recs = _discover(f"--bootstrap={boot}")
    assert code == 0
    found = [r["node_id"] for r in recs]
    assert len(found) == len(set(found))  # each node once
    assert set(found) == everyone
    assert all(r["type"] == "node" and r["source"] == "dht" for r in recs)

    # filters come from the signed capabilities
    code, recs = _discover(f"--bootstrap={boot}", "--runtime=wasmtime")
    assert code == 0
    assert {r["node_id"] for r in recs} == {i["node_id"] for i in infos[1::2]}

    # kill five nodes (not the bootstrap node): lookups still find every live node
    rng = random.Random(6)
    victims = rng.sample(range(len(rest)), 5)
    for v in victims:
        procs.stop(rest[v])
    alive = everyone - {infos[v]["node_id"] for v in victims}
    code, recs = _discover(f"--bootstrap={boot}")
    assert code == 0
    assert alive <= {r["node_id"] for r in recs}

    # a node lookup from a fresh client converges on live nodes
    async def lookup() -> list[str]:
        svc = DhtService(Identity.generate(), [])
        try:
            await svc.bootstrap([boot])
            return [c.node_id for c in await svc.lookup_nodes("phase/cap/any")]
        finally:
            await svc.close()
    closest = asyncio.run(asyncio.wait_for(lookup(), 30))
    assert len(closest) == len(alive)
    assert set(closest) == alive  # the k (=20) closest are all live nodes; the dead dropped out
