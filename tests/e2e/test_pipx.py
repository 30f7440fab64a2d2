"""README's pipx section, run for real: every tool installs with pipx and works.

pipx itself is installed from the package index into a throw-away venv; PIPX_HOME,
PIPX_BIN_DIR and PIPX_MAN_DIR point into the test's temp dir, so nothing outside it
is touched. The shell block that follows the ``<!-- pipx-install`` marker in
README.md is run verbatim with ``sh -eu`` from the checkout root; then each
installed tool answers ``--version`` and runs one real command.

To add a tool (e.g. phase-boot): add its ``pipx install`` line to README.md's
block and one entry to TOOLS below.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.conftest import ROOT, VECTORS

MARKER = "<!-- pipx-install"
HELLO = ROOT / "packages" / "plasm-exec" / "examples" / "build" / "hello.wasm"

# tool -> the distribution whose version it prints (each installed as its own pipx app)
TOOLS = {
    "phase-key": "phase-core",
    "phase-verify": "phase-verify",
    "phase-fetch": "phase-fetch",
    "plasm-exec": "plasm-exec",
    "phase-discover": "phase-discover",
    "plasmd": "plasmd",
    # "phase-boot": "phase-boot",
}


def readme_block() -> str:
    text = (ROOT / "README.md").read_text()
    at = text.find(MARKER)
    assert at >= 0, f"README.md has no {MARKER} marker"
    m = re.compile(r"```sh\n(.*?)```", re.S).search(text, at)
    assert m is not None, "no ```sh block after the pipx marker"
    return m.group(1)


def version_of(dist: str) -> str:
    text = (ROOT / "packages" / dist / "pyproject.toml").read_text()
    m = re.search(r'^version = "([^"]+)"', text, re.M)
    assert m is not None
    return m.group(1)


@pytest.mark.slow
def test_readme_pipx_section_installs_every_tool(tmp_path: Path) -> None:
    block = readme_block()
    for tool in TOOLS:  # the README names every tool (phase-key ships in phase-core)
        assert tool in block or TOOLS[tool] in block, f"README's pipx block misses {tool}"

    tools_venv = tmp_path / "pipx-venv"
    venv.EnvBuilder(with_pip=True).create(tools_venv)
    r = subprocess.run([str(tools_venv / "bin" / "python"), "-m", "pip", "install", "-q",
                        "--disable-pip-version-check", "pipx"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]

    bin_dir = tmp_path / "bin"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("VIRTUAL_ENV", "PYTHON", "PIPX_", "PHASE_"))}
    env.update(PIPX_HOME=str(tmp_path / "pipx-home"), PIPX_BIN_DIR=str(bin_dir),
               PIPX_MAN_DIR=str(tmp_path / "man"), HOME=str(tmp_path / "home"),
               PIPX_DEFAULT_PYTHON=sys.executable, PWD=str(ROOT),
               PATH=os.pathsep.join([str(bin_dir), str(tools_venv / "bin"),
                                     "/usr/local/bin", "/usr/bin", "/bin"]))
    # keep the user's pip cache (and index settings) though HOME moved
    env.setdefault("PIP_CACHE_DIR", str(Path.home() / ".cache" / "pip"))
    (tmp_path / "home").mkdir()
    r = subprocess.run(["sh", "-eu", "-c", block], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=1800)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-4000:])
    # the block ends with a phase-verify run: its record is the last stdout line
    assert json.loads(r.stdout.strip().splitlines()[-1])["doc_type"] == "boot_manifest"

    def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(list(args), cwd=tmp_path, env=env, capture_output=True,
                              input=stdin, timeout=120)

    for tool, dist in TOOLS.items():
        exe = bin_dir / tool
        assert exe.exists(), f"pipx installed no {tool}"
        # each tool runs from its own pipx venv, not from the test's interpreter
        assert str(tmp_path / "pipx-home") in os.path.realpath(exe)
        v = run(str(exe), "--version")
        assert v.returncode == 0, v.stderr
        assert version_of(dist) in v.stdout.decode(), (tool, v.stdout)

    # one real command each
    key = tmp_path / "me.key"
    r = run(str(bin_dir / "phase-key"), "new", f"--key={key}")
    assert r.returncode == 0 and key.exists(), r.stderr
    r = run(str(bin_dir / "phase-verify"), "--keys", str(VECTORS / "keyring.toml"),
            str(VECTORS / "invalid" / "threshold--boot-one-of-two.json"))
    # a rejection: exit 1 and one error record naming why (docs/pipeline.md)
    assert r.returncode == 1, r.stderr
    assert [json.loads(ln)["error"] for ln in r.stdout.splitlines()] == ["threshold"]
    r = run(str(bin_dir / "plasm-exec"), "run", str(HELLO))
    assert r.returncode == 0, r.stderr
    src = tmp_path / "src"
    src.mkdir()
    cid = "sha256:" + hashlib.sha256(b"phase\n").hexdigest()
    (src / cid.split(":")[1]).write_bytes(b"phase\n")
    r = run(str(bin_dir / "phase-fetch"), "get", cid, f"--from-dir={src}",
            f"--cas={tmp_path / 'cas'}")
    assert r.returncode == 0, r.stderr
    r = run(str(bin_dir / "plasmd"), "init", f"--home={tmp_path / 'node'}")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["type"] == "node_init"
    # a real DHT lookup through a bootstrap address nobody answers on: 69, said so
    r = run(str(bin_dir / "phase-discover"), "nodes", "--via=dht",
            "--bootstrap=127.0.0.1:9", "--timeout=1")
    assert r.returncode == 69 and b"none_found" in r.stderr, r.stderr
