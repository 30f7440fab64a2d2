"""Twenty plasmd processes in internet mode on 127.0.0.1 form a DHT from one bootstrap
node; a fresh phase-discover finds every node's record by its deadline; with five
nodes killed, lookups still work, and a job submitted without --peer finds a node."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from phase_core.aio.dht import DhtService
from phase_core.identity import Identity
from tests.conftest import script
from tests.plasmd.conftest import HELLO, init_home, prepare_home, start_node

N = 20
DEADLINE_S = 15
ENV = {"PHASE_DHT_UPKEEP_S": "1"}


def discover(*args: str) -> tuple[int, list[dict[str, object]]]:
    r = subprocess.run([script("phase-discover"), "nodes", "--via=dht", *args,
                        f"--timeout={DEADLINE_S}"], capture_output=True, text=True,
                       timeout=DEADLINE_S + 20)
    return r.returncode, [json.loads(x) for x in r.stdout.splitlines()]


@pytest.mark.slow
def test_twenty_plasmd_nodes_form_a_dht(tmp_path):
    first_home = tmp_path / "n0"
    prepare_home(first_home, mode="internet", mdns=False, open=True)
    first = start_node(first_home, env=ENV)
    nodes = [first]
    try:
        boot = f"127.0.0.1:{first.port}"
        homes = []
        for i in range(1, N):
            h = tmp_path / f"n{i}"
            prepare_home(h, mode="internet", mdns=False, open=True, bootstrap=(boot,))
            homes.append(h)
        with ThreadPoolExecutor(8) as pool:
            nodes += list(pool.map(lambda h: start_node(h, env=ENV), homes))
        everyone = {n.node_id for n in nodes}
        assert len(everyone) == N

        code, recs = discover(f"--bootstrap={boot}")
        assert code == 0
        found = [r["node_id"] for r in recs]
        assert len(found) == len(set(found))  # each node once
        assert set(found) == everyone
        assert all(r["type"] == "node" and r["source"] == "dht" for r in recs)
        st = first.status()
        assert st["mode"] == "internet" and st["dht"]["contacts"] >= 1

        # capability filters come from the signed, measured capabilities
        code, recs = discover(f"--bootstrap={boot}", "--runtime=wasmtime")
        assert code == 0 and {r["node_id"] for r in recs} == everyone
        code, recs = discover(f"--bootstrap={boot}", "--runtime=no-such-runtime")
        assert code == 69 and recs == []

        # kill five nodes (not the bootstrap node) with SIGKILL
        victims = random.Random(5).sample(range(1, N), 5)
        for v in victims:
            nodes[v].proc.kill()
            nodes[v].proc.wait(10)
        alive = everyone - {nodes[v].node_id for v in victims}
        code, recs = discover(f"--bootstrap={boot}")
        assert code == 0 and alive <= {r["node_id"] for r in recs}

        async def lookup() -> list[str]:
            svc = DhtService(Identity.generate(), [])
            try:
                await svc.bootstrap([boot])
                return [c.node_id for c in await svc.lookup_nodes("phase/cap/any")]
            finally:
                await svc.close()
        closest = asyncio.run(asyncio.wait_for(lookup(), 30))
        assert set(closest) <= alive and len(closest) >= len(alive) - 1

        # a job without --peer: the client finds a capable node through the DHT
        client = tmp_path / "client"
        init_home(client)
        stdin = tmp_path / "in.txt"
        stdin.write_text("Hello, World")
        r = subprocess.run([script("plasmd"), "submit", f"--home={client}", str(HELLO),
                            f"--stdin={stdin}", f"--bootstrap={boot}", "--json",
                            "--discover-timeout=15"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        res = json.loads(r.stdout)
        assert res["worker"] in alive
    finally:
        for n in nodes:
            n.stop()
