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


def test_words_after_the_module_belong_to_the_guest(tmp_path):
    printenv = str(EXAMPLES / "printenv.wasm")
    # `--env=FOO=1` after the module is the guest's argument, not ours: FOO stays unset
    p = run([printenv, "FOO", "--env=FOO=1"], tmp_path / "h")
    assert (p.returncode, p.stdout) == (1, b""), p.stderr
    p = run(["--env", "FOO=1", printenv, "FOO", "-x"], tmp_path / "h")
    assert (p.returncode, p.stdout) == (1, b"1\n"), p.stderr  # -x is not set either
    p = run(["--env=FOO=1", printenv, "--", "FOO"], tmp_path / "h")
    assert (p.returncode, p.stdout) == (0, b"1\n"), p.stderr


def test_split_guest_args():
    from plasm_exec.cli import split_guest_args as split
    assert split(["run", "m.wasm", "A", "--env=A=1"]) == ["run", "--", "m.wasm", "A",
                                                           "--env=A=1"]
    assert split(["run", "--env", "A=1", "-v", "m.wasm", "-x"]) == \
        ["run", "--env", "A=1", "-v", "--", "m.wasm", "-x"]
    assert split(["run", "--", "m.wasm", "--", "-x"]) == ["run", "--", "m.wasm", "-x"]
    assert split(["job", "x", "--quiet"]) == ["job", "x", "--quiet"]


def test_dir_without_guest_path_maps_to_the_same_path(tmp_path):
    from plasm_exec.run import parse_dirs
    assert parse_dirs(["d", "a::/b", "c:rw", "e::/f:rw"]) == \
        [("d", "d", False), ("a", "/b", False), ("c", "c", True), ("e", "/f", True)]
    data = tmp_path / "data"
    data.mkdir()
    (data / "f.txt").write_bytes(b"a b\nc\n")
    p = subprocess.run([PY, "-m", "plasm_exec", "run", "--dir", ".",
                        str(EXAMPLES / "wc.wasm"), "f.txt"], capture_output=True,
                       env=_env(tmp_path / "h"), cwd=data, timeout=120)
    assert (p.returncode, p.stdout) == (0, b"2 3 6 f.txt\n"), p.stderr
