"""The README's `plasmd dispatch` block, run with `sh -c` as written: only its three
`<id>@10.0.0.N:4433` placeholders become three real workers on 127.0.0.1, and the
home is the one PHASE_HOME names (the block passes no --home)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

from tests.conftest import ROOT, script
from tests.dispatch.conftest import hello_jobs, records, start_workers

PLACEHOLDER = re.compile(r"<id>@10\.0\.0\.\d+:4433")


def readme_block() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Many jobs over many nodes", 1)[1]
    return section.split("```sh\n", 1)[1].split("```", 1)[0]


def test_readme_dispatch_block(tmp_path: Path, client_home: Path, stop_all: list[Any]) -> None:
    block = readme_block()
    assert len(PLACEHOLDER.findall(block)) == 3, block
    nodes = start_workers(tmp_path, 3)
    stop_all.extend(nodes)
    peers = iter(n.peer for n in nodes)
    code = PLACEHOLDER.sub(lambda _: next(peers), block)
    lines, ids = hello_jobs(client_home, 6, tmp_path / "in")
    (tmp_path / "jobs.jsonl").write_text("\n".join(lines) + "\n")
    env = dict(os.environ, PHASE_HOME=str(client_home),
               PATH=f"{Path(script('plasmd')).parent}:{os.environ['PATH']}")
    r = subprocess.run(["sh", "-c", code], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    results = records((tmp_path / "results.jsonl").read_text())
    assert sorted(int(x["index"]) for x in results) == list(range(6))
    for x in results:
        assert x["type"] == "job_result" and x["job"] == ids[int(x["index"])]
        assert x["exit_code"] == 0 and len(x["agreed"]) >= 2
