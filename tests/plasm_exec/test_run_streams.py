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
    assert split(["-v", "run", "m.wasm", "-v"]) == ["-v", "run", "--", "m.wasm", "-v"]
    assert split(["run", "--help"]) == ["run", "--help"]


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


FORGED = (b'{"v": 1, "type": "log", "ts": "2026-01-01T00:00:00Z", "level": "info", '
          b'"tool": "plasm-exec", "event": "plasm.run.ended", "ended": "exited", '
          b'"exit_code": 0}\n')


def forger(tmp_path) -> Path:
    """Writes a forged plasm-exec log line to its stderr, then exits 3."""
    import wasmtime
    data = "".join(f"\\{b:02x}" for b in FORGED)
    mod = tmp_path / "forger.wasm"
    mod.write_bytes(wasmtime.wat2wasm(f"""(module
 (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
 (import "wasi_snapshot_preview1" "proc_exit" (func $x (param i32)))
 (memory (export "memory") 1)
 (data (i32.const 0) "\\40\\00\\00\\00\\{len(FORGED):02x}\\00\\00\\00")
 (data (i32.const 64) "{data}")
 (func (export "_start")
  (drop (call $w (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 16)))
  (call $x (i32.const 3))))"""))
    return mod


def test_a_guest_cannot_forge_our_log_lines(tmp_path):
    p = run(["-v", str(forger(tmp_path))], tmp_path / "h")  # stderr is a pipe: framed
    assert p.returncode == 3
    records = [json.loads(line) for line in p.stderr.splitlines()]  # every line is JSON
    ended = [r for r in records if r["event"] == "plasm.run.ended"]
    assert len(ended) == 1 and ended[0]["exit_code"] == 3
    guest = [r for r in records if r["event"] == "plasm.guest.stderr"]
    assert [r["text"].encode() + b"\n" for r in guest] == [FORGED]


def test_guest_stderr_raw_on_request(tmp_path):
    p = run(["--guest-stderr=raw", str(forger(tmp_path))], tmp_path / "h")
    assert p.returncode == 3 and p.stderr.startswith(FORGED)
    assert run(["--guest-stderr=loud", str(forger(tmp_path))], tmp_path / "h").returncode == 64


def test_framer_splits_long_and_unfinished_lines():
    from plasm_exec.stdio import FRAME_BYTES, Framer
    f = Framer()
    recs = f.feed(b"a\nb" + b"x" * FRAME_BYTES) + f.flush()
    texts = [(json.loads(r)["text"], json.loads(r).get("partial", False)) for r in recs]
    assert texts[0] == ("a", False)
    assert texts[1] == ("b" + "x" * (FRAME_BYTES - 1), True)
    assert texts[2] == ("x", True)
    bad = json.loads(Framer().feed(b"\xff\x00\n")[0])["text"]
    assert bad == "\\xff\x00"


def test_first_use_creates_the_node_key_with_a_notice(tmp_path):
    import wasmtime
    mod = tmp_path / "ok.wasm"
    mod.write_bytes(wasmtime.wat2wasm('(module (memory (export "memory") 1) '
                                      '(func (export "_start")))'))
    home = tmp_path / "h"
    notices = []
    for i in range(2):
        p = run([f"--receipt={tmp_path / f'r{i}.json'}", str(mod)], home)
        assert p.returncode == 0, p.stderr
        notices.append([json.loads(ln) for ln in p.stderr.splitlines()
                        if b"plasm.key.created" in ln])
    assert len(notices[0]) == 1 and notices[1] == []  # told once, when it was made
    assert notices[0][0]["path"] == str(home / "key") and (home / "key").exists()
    assert notices[0][0]["level"] == "warning"  # shown at the default verbosity
