"""A module no worker can compile, dispatched: every node is asked (one worker's word
does not condemn a job), and the job's error says what a local run would say."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from phase_core import identity
from plasmd.submit import make_manifest
from tests.conftest import BROKEN_MODULE, script
from tests.dispatch.conftest import records, start_workers
from tests.records import check_stdout


def test_a_module_no_worker_compiles_fails_65_after_every_node_said_so(
        tmp_path: Path, client_home: Path, stop_all: list[Any]) -> None:
    nodes = start_workers(tmp_path, 2)
    stop_all.extend(nodes)
    broken = tmp_path / "broken.wasm"
    broken.write_bytes(BROKEN_MODULE)
    env = make_manifest(identity.load(client_home / "key"), broken.read_bytes(), None,
                        argv=["broken.wasm"])
    line = json.dumps({"v": 1, "type": "job", "manifest": env, "module_path": str(broken)})
    r = subprocess.run([script("plasmd"), "dispatch", f"--home={client_home}",
                        "--peer=" + ",".join(n.peer for n in nodes)],
                       input=line + "\n", capture_output=True, text=True, timeout=240)
    assert r.returncode == 65, (r.stdout, r.stderr[-2000:])
    check_stdout(r.stdout)
    [rec] = records(r.stdout)
    assert rec["type"] == "error" and rec["error"] == "bad_module" and rec["exit_code"] == 65
    assert "2 tried" in rec["message"] and "plasm-exec" in rec["hint"], rec
    assert {a["node"] for a in rec["attempts"]} == {n.node_id for n in nodes}, rec
    assert all(a["error"] == "bad_module" for a in rec["attempts"]), rec
