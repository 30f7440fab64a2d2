"""The README's "Use it from code" snippets, run verbatim against a node started by
`plasmd start`: as a new user would paste them, from a folder holding hello.wasm."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.sdk_php.test_php_sdk import EXAMPLES, ROOT, _require

BLOCK = re.compile(r"<!-- code-test: (\w+) -->\n```\w*\n(.*?)```", re.S)


def snippets() -> dict[str, str]:
    return {lang: code for lang, code in BLOCK.findall((ROOT / "README.md").read_text())}


def test_the_readme_has_both_snippets() -> None:
    assert set(snippets()) == {"python", "php"}


def user_dir(tmp_path: Path) -> Path:
    """A folder like the checkout's top one: sdk/ beside the user's hello.wasm."""
    (tmp_path / "sdk").symlink_to(ROOT / "sdk")
    shutil.copy(EXAMPLES / "hello.wasm", tmp_path / "hello.wasm")
    return tmp_path


def run(cmd: list[str], cwd: Path, home: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PHASE_HOME=str(home))
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
                          check=False)


def test_python_snippet_runs_verbatim(node: Any, tmp_path: Path) -> None:
    r = run([sys.executable, "-c", snippets()["python"]], user_dir(tmp_path), node.home)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "dlroW ,olleH\n"


def test_php_snippet_runs_verbatim(node: Any, tmp_path: Path) -> None:
    php = _require("php")
    script = user_dir(tmp_path) / "snippet.php"
    script.write_text(snippets()["php"])
    r = run([php, str(script)], tmp_path, node.home)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout == "dlroW ,olleH\n"


def test_php_snippet_fails_loudly_without_a_node(tmp_path: Path) -> None:
    php = _require("php")
    script = user_dir(tmp_path) / "snippet.php"
    script.write_text(snippets()["php"])
    r = run([php, str(script)], tmp_path, tmp_path / "no-node-here")
    assert r.returncode != 0 and "dlroW" not in r.stdout
