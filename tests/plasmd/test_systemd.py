import os
import shutil
import subprocess

import pytest

from tests.conftest import ROOT

UNIT = ROOT / "packages" / "plasmd" / "systemd" / "plasmd.service"


def test_unit_is_hardened():
    text = UNIT.read_text()
    for line in ("User=phase", "NoNewPrivileges=yes", "ProtectSystem=strict",
                 "ProtectHome=yes", "PrivateTmp=yes", "ReadWritePaths=/var/lib/phase",
                 "RestrictAddressFamilies=", "MemoryMax=", "ExecReload=/bin/kill -HUP"):
        assert line in text


def test_systemd_analyze_verify(tmp_path):
    tool = shutil.which("systemd-analyze")
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze is missing in CI")
        pytest.skip("systemd-analyze is not installed")
    unit = tmp_path / "plasmd.service"
    unit.write_text(UNIT.read_text())
    r = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "plasmd.service" not in r.stderr, r.stderr
