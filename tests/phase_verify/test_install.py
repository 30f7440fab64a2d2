"""phase-verify installs on its own from the checkout, into a fresh venv, and works.

This is what `pipx install ./packages/phase-verify --preinstall "$PWD/packages/phase-core"`
does (pipx is a venv per app); the README documents both.
"""

import json
import subprocess
import sys
import venv

import pytest

from tests.conftest import ROOT, VECTORS


@pytest.mark.slow
def test_fresh_venv_install_of_phase_verify(tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        str(ROOT / "packages" / "phase-core"),
                        str(ROOT / "packages" / "phase-verify")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    # only what phase-verify needs came along: no wasmtime, no other tools
    listed = subprocess.run([str(py), "-m", "pip", "list", "--format=json"],
                            capture_output=True, text=True, check=True).stdout
    names = {p["name"].lower() for p in json.loads(listed)}
    assert {"phase-core", "phase-verify", "pynacl", "docopt-ng"} <= names
    assert not names & {"wasmtime", "plasm-exec", "phase-fetch", "plasmd", "aioquic"}
    tool = env_dir / "bin" / "phase-verify"
    r = subprocess.run([str(tool), "--keys", str(VECTORS / "keyring.toml"),
                        str(VECTORS / "valid" / "boot_manifest.json")],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["doc_type"] == "boot_manifest"
    r = subprocess.run([str(tool), "--keys", str(VECTORS / "keyring.toml"),
                        str(VECTORS / "invalid" / "threshold--boot-one-of-two.json")],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 1 and json.loads(r.stdout)["error"] == "threshold"
    assert sys.executable not in r.stderr
