"""The README's first command: the main job, end to end."""

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_demo_script_runs_a_remote_job_and_verifies_the_receipt(tmp_path):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
               TMPDIR=str(tmp_path))
    env.pop("PHASE_HOME", None)
    r = subprocess.run(["sh", str(ROOT / "scripts" / "demo.sh")], capture_output=True,
                       text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "dlroW ,olleH" in r.stdout
    assert '"type":"verified","doc_type":"receipt"' in r.stdout
    assert list(tmp_path.iterdir()) == []  # the throw-away homes are gone
