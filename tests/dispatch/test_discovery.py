"""``plasmd dispatch`` without --peer: the workers are found over the DHT (real
plasmd processes in internet mode on 127.0.0.1, one of them the bootstrap node)."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tests.conftest import script
from tests.dispatch.conftest import hello_jobs, records
from tests.plasmd.conftest import prepare_home, start_node
from tests.records import check_stdout

ENV = {"PHASE_DHT_UPKEEP_S": "1"}


def test_jobs_go_to_the_workers_the_dht_finds(tmp_path: Path, client_home: Path,
                                              stop_all: list[Any]) -> None:
    first_home = tmp_path / "n0"
    prepare_home(first_home, mode="internet", mdns=False, open=True)
    first = start_node(first_home, env=ENV)
    stop_all.append(first)
    boot = f"127.0.0.1:{first.port}"
    homes = []
    for i in range(1, 4):
        h = tmp_path / f"n{i}"
        prepare_home(h, mode="internet", mdns=False, open=True, bootstrap=(boot,))
        homes.append(h)
    with ThreadPoolExecutor(3) as pool:
        stop_all.extend(pool.map(lambda h: start_node(h, env=ENV), homes))
    everyone = {n.node_id for n in stop_all}
    lines, ids = hello_jobs(client_home, 40, tmp_path / "in")
    r = subprocess.run([script("plasmd"), "dispatch", f"--home={client_home}", "--via=dht",
                        f"--bootstrap={boot}", "--discover-timeout=15s"],
                       input="\n".join(lines) + "\n", capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    check_stdout(r.stdout)
    recs = records(r.stdout)
    assert sorted(int(x["index"]) for x in recs) == list(range(40))
    assert all(x["job"] == ids[int(x["index"])] for x in recs)
    used = {x["worker"] for x in recs}
    assert used <= everyone and len(used) >= 2  # spread over what discovery found
