"""`plasm-exec run` and its streams: broken pipes, guest arguments, guest stderr framing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PY = sys.executable
EXAMPLES = Path(__file__).resolve().parents[2] / "packages" / "plasm-exec" / "examples" / "build"


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "PHASE_HOME": str(home)}


def run(args: list[str], home: Path, stdin: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "plasm_exec", "run", *args], input=stdin,
                          capture_output=True, env=_env(home), timeout=120)


def test_broken_pipe_exits_141(tmp_path):
    receipt = tmp_path / "r.json"
    p = subprocess.Popen([PY, "-m", "plasm_exec", "run", "-v", f"--receipt={receipt}",
                          str(EXAMPLES / "flood.wasm")], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=_env(tmp_path / "h"))
    head = subprocess.Popen(["head", "-c", "10"], stdin=p.stdout, stdout=subprocess.PIPE)
    p.stdout.close()  # only head reads it now
    got = head.communicate(timeout=120)[0]
    err = p.communicate(timeout=120)[1].decode()
    assert len(got) == 10
    assert p.returncode == 141, err
    assert "output_limit" not in err and "Traceback" not in err
    events = [json.loads(ln)["event"] for ln in err.splitlines()]
    assert "plasm.run.broken_pipe" in events
    assert not receipt.exists()
