"""The package's pieces that need no VM: the packaged config, the man pages."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

from plasmd import config as configs
from plasmd import daemon
from tests.conftest import ROOT, script

DEB = ROOT / "packaging" / "deb"


def _manpage() -> object:
    spec = importlib.util.spec_from_file_location("manpage", DEB / "manpage.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_packaged_config_listens_on_the_lan_in_local_mode() -> None:
    cfg = configs.load(DEB / "config.toml", env={})
    assert cfg.mode == "local" and cfg.listen == ("0.0.0.0:4433",) and cfg.open is False
    daemon.check_mode(cfg)  # local mode accepts it


def test_manpage_from_help_has_the_sections_and_escapes() -> None:
    help_text = subprocess.run([script("plasmd"), "--help"], capture_output=True, text=True,
                               check=True, timeout=60).stdout
    page = _manpage().render("plasmd", "0.1.0", "2026-11-30", help_text)  # type: ignore[attr-defined]
    lines = page.splitlines()
    assert lines[0] == '.TH PLASMD 1 "2026-11-30" "plasmd 0.1.0" "Phase"'
    assert lines.index(".SH NAME") < lines.index(".SH SYNOPSIS") < lines.index(".SH DESCRIPTION")
    assert ".SH OPTIONS" in lines and '.SH "EXIT STATUS"' in lines
    assert "  plasmd start [\\-\\-mode=MODE] [\\-\\-listen=ADDR]... [\\-\\-open] " \
           "[\\-\\-workers=N] [options]" in lines


def test_manpage_escapes_roff_control_lines() -> None:
    page = _manpage().render("x", "1", "d", "X does things.\n\n.dangerous\n'quote\na\\b\n")  # type: ignore[attr-defined]
    assert "\\&.dangerous" in page and "\\&'quote" in page and "a\\eb" in page


def test_maintainer_scripts_parse(tmp_path: Path) -> None:
    for name in ("plasmd.postinst", "plasmd.postrm"):
        subprocess.run(["sh", "-n", str(DEB / "debian" / name)], check=True, timeout=30)
        assert "#DEBHELPER#" in (DEB / "debian" / name).read_text()


def test_scripts_are_shellcheck_clean() -> None:
    import os
    import shutil

    import pytest

    if shutil.which("shellcheck") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("shellcheck is not installed (.ci/apt-packages.txt)")
        pytest.skip("shellcheck is not installed")
    files = [DEB / "build", DEB / "vm" / "build-image", DEB / "debian" / "plasmd.postinst",
             DEB / "debian" / "plasmd.postrm"]
    r = subprocess.run(["shellcheck", "-x", "-s", "sh", *map(str, files)], capture_output=True,
                       text=True, timeout=120, cwd=DEB)
    assert r.returncode == 0, r.stdout + r.stderr


def test_ubuntu_target_builds(tmp_path: Path) -> None:
    """The Ubuntu 24.04 packages build here (python3.12, cp312 wheels); they are not
    installed anywhere (no Ubuntu image): see packaging/deb/README.md."""
    import os

    from tests.deb.conftest import require_tools

    require_tools()
    r = subprocess.run([str(DEB / "build"), "--target=ubuntu24.04", f"--out={tmp_path}",
                        "--no-lintian"], capture_output=True, text=True, timeout=900,
                       env=dict(os.environ, PHASE_BOOT_SKIP_SETUP="1"))
    assert r.returncode == 0, r.stderr[-4000:]
    tools = next(tmp_path.glob("phase-tools_*_*.deb"))
    plasmd = next(tmp_path.glob("plasmd_*_*.deb"))
    info = subprocess.run(["dpkg-deb", "-f", str(tools), "Depends"], capture_output=True,
                          text=True, check=True).stdout
    assert "python3.12" in info
    files = subprocess.run(["dpkg-deb", "-c", str(plasmd)], capture_output=True, text=True,
                           check=True).stdout
    assert "./usr/lib/phase/lib/python3.12/site-packages/plasmd/daemon.py" in files
    assert "./lib/systemd/system/plasmd.service" in files
