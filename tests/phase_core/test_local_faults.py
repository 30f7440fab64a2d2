"""Local faults are not bugs: read-only, full and damaged state give 74 or 78, never 70.

Real processes against a read-only bind mount (chmod does not stop root) and a
small tmpfs filled to the last byte, both made and removed by the test. Each
run must exit with the documented code, name the file, and log no traceback.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, VECTORS, script

HELLO = ROOT / "packages" / "plasm-exec" / "examples" / "build" / "hello.wasm"
BOOT = VECTORS / "rollback" / "boot-v7.json"
KEYRING = VECTORS / "keyring.toml"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")


def _mount(*args: str) -> None:
    p = subprocess.run(["mount", *args], capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount ({p.stderr.strip()})")


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[Path]:
    """``path`` (already filled in) made read-only by a bind mount over itself."""
    _mount("--bind", str(path), str(path))
    try:
        _mount("-o", "remount,bind,ro", str(path))
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


@contextlib.contextmanager
def full_fs(path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs at ``path`` with no byte left."""
    path.mkdir(exist_ok=True)
    _mount("-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(path))
    try:
        (path / "home").mkdir()
        fd = os.open(path / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            for size in (4096, 1):
                with contextlib.suppress(OSError):
                    while os.write(fd, b"\0" * size):
                        pass
        finally:
            os.close(fd)
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def run(*argv: str | Path, home: Path | None = None, stdin: bytes = b""
        ) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PHASE_LOG_FORMAT": "json"}
    if home is not None:
        env["PHASE_HOME"] = str(home)
    cmd = [script(str(argv[0])), *map(str, argv[1:])]
    return subprocess.run(cmd, input=stdin.decode(), capture_output=True, text=True, env=env,
                          timeout=120)


def assert_fault(p: subprocess.CompletedProcess[str], code: int, path: Path | str,
                 slug: str | None = None) -> dict[str, object]:
    """Exit ``code``, an error record naming ``path``, no traceback, never 70."""
    assert p.returncode == code, p.stderr
    assert "Traceback" not in p.stderr and "this is a bug" not in p.stderr
    errors = [json.loads(line) for line in p.stderr.splitlines() if '"level": "error"' in line]
    assert errors, p.stderr
    last = errors[-1]
    assert last["exit_code"] == code
    assert str(path) in str(last["message"]), last
    if slug is not None:
        assert last["error"] == slug
    return last


def fetch_source(tmp_path: Path, size: int = 200_000) -> tuple[str, Path]:
    data = os.urandom(size)
    hexd = hashlib.sha256(data).hexdigest()
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / hexd).write_bytes(data)
    return f"sha256:{hexd}", src


# -- read-only ----------------------------------------------------------------

def test_read_only_home(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    inited = ro / "node"
    assert run("plasmd", "init", "-q", home=inited).returncode == 0
    for d in ("sha256", "tmp", "quarantine"):
        (inited / "cas" / d).mkdir(parents=True)
    key = tmp_path / "a.key"
    assert run("phase-key", "new", "-q", f"--key={key}").returncode == 0
    cid, src = fetch_source(tmp_path)
    state = ro / "state.json"
    assert run("phase-verify", f"--keys={KEYRING}", f"--state={state}", BOOT).returncode == 0
    with read_only(ro):
        # the mark is already v7: verifying v7 again needs no write, so a read-only
        # state (read-only media) still answers; v8 would raise the mark and cannot
        p = run("phase-verify", f"--keys={KEYRING}", f"--state={state}", BOOT)
        assert p.returncode == 0, p.stderr
        last = assert_fault(run("phase-verify", f"--keys={KEYRING}", f"--state={state}",
                                VECTORS / "rollback" / "boot-v8.json"), 74, ro, "io_error")
        assert last["errno"] == "EROFS" and "read-only" in str(last["hint"])
        assert_fault(run("phase-verify", f"--keys={KEYRING}", f"--state={ro / 'new.json'}",
                         BOOT), 74, ro / "new.json")
        assert_fault(run("phase-fetch", "get", f"--from-dir={src}", cid, home=ro / "h"),
                     74, ro / "h")
        assert_fault(run("phase-key", "new", f"--key={ro / 'k'}"), 74, ro / "k")
        assert_fault(run("phase-key", "trust", f"--keyring={ro / 'kr.toml'}", "--name=a",
                         "--role=worker", f"--key={key}"), 74, ro / "kr.toml")
        assert_fault(run("plasm-exec", "run", f"--receipt={ro / 'r.json'}", HELLO,
                         home=tmp_path / "h"), 74, ro / "r")
        assert_fault(run("plasm-exec", "run", f"--receipt={tmp_path / 'r.json'}", HELLO,
                         home=ro / "h2"), 74, ro / "h2")  # the node key cannot be made
        assert_fault(run("plasmd", "init", home=ro / "new"), 74, ro / "new")
        assert_fault(run("plasmd", "start", "--listen=127.0.0.1:0", home=inited), 74, inited)


# -- full ---------------------------------------------------------------------

def test_full_file_system(tmp_path):
    key = tmp_path / "a.key"
    assert run("phase-key", "new", "-q", f"--key={key}").returncode == 0
    cid, src = fetch_source(tmp_path)
    with full_fs(tmp_path / "full") as full:
        home = full / "home"
        last = assert_fault(run("phase-verify", f"--keys={KEYRING}",
                                f"--state={home / 'state.json'}", BOOT), 74, home / "state.json")
        assert last["errno"] == "ENOSPC"
        assert_fault(run("phase-fetch", "get", f"--from-dir={src}", cid, home=home), 74, home)
        assert_fault(run("phase-key", "new", f"--key={home / 'k'}"), 74, home / "k")
        assert_fault(run("phase-key", "trust", f"--keyring={home / 'kr.toml'}", "--name=a",
                         "--role=worker", f"--key={key}"), 74, home / "kr.toml")
        assert_fault(run("plasm-exec", "run", f"--receipt={home / 'r.json'}", HELLO,
                         home=tmp_path / "h"), 74, home / "r")
        assert_fault(run("plasmd", "init", home=home / "node"), 74, home / "node")


# -- other local faults -------------------------------------------------------

@pytest.mark.parametrize(("content", "needle"), [
    (b"\xff\xfe garbage", "not JSON"),
    (b"{}", "phase_state"),
    (b'{"type": "phase_state", "marks": []}', '"marks"'),
    (b'{"type": "phase_state", "marks": {"boot/stable/x86_64": {"version": "7"}}}',
     "marks.boot/stable/x86_64"),
])
def test_damaged_state_is_bad_config_naming_file_and_key(tmp_path, content, needle):
    state = tmp_path / "state.json"
    state.write_bytes(content)
    last = assert_fault(run("phase-verify", f"--keys={KEYRING}", f"--state={state}", BOOT),
                        78, state, "bad_config")
    assert needle in str(last["message"])
    assert state.read_bytes() == content  # left alone for the operator


@pytest.mark.parametrize(("text", "key"), [
    ('listen = [1]\n', "listen"), ('workers = "many"\n', "workers"),
    ('open = "false"\n', "open"), ('[ceilings]\nwall_ms = "soon"\n', "ceilings.wall_ms"),
    ('mode = "nowhere"\n', "mode"),
])
def test_damaged_config_is_78_naming_file_and_key(tmp_path, text, key):
    home = tmp_path / "home"
    assert run("plasmd", "init", "-q", home=home).returncode == 0
    (home / "config.toml").write_text(text)
    last = assert_fault(run("plasmd", "start", home=home), 78, home / "config.toml",
                        "bad_config")
    assert key in str(last["message"])


def test_damaged_keyring_is_78_naming_the_file(tmp_path):
    kr = tmp_path / "keyring.toml"
    kr.write_text("[keys.a]\nkey = 1\n")
    assert_fault(run("phase-verify", f"--keys={kr}", BOOT), 78, kr, "bad_config")
    assert_fault(run("phase-key", "trust", f"--keyring={kr}", "--name=b", "--role=worker",
                     f"--public={'ab' * 32}"), 78, kr, "bad_config")


def test_out_naming_a_directory_is_74(tmp_path):
    cid, src = fetch_source(tmp_path, 100)
    out = tmp_path / "outdir"
    out.mkdir()
    last = assert_fault(run("phase-fetch", "get", f"--from-dir={src}", f"--out={out}", cid,
                            home=tmp_path / "h"), 74, out, "io_error")
    assert last["errno"] == "EISDIR"


def test_cosign_twice_with_one_key_is_bad_input_not_a_bug(tmp_path):
    key = tmp_path / "a.key"
    assert run("phase-key", "new", "-q", f"--key={key}").returncode == 0
    signed = run("phase-key", "sign", "--type=receipt", f"--key={key}", stdin=b'{"a": 1}\n')
    assert signed.returncode == 0
    env = tmp_path / "env.json"
    env.write_text(signed.stdout)
    assert_fault(run("phase-key", "cosign", f"--key={key}", env), 65, "already signed",
                 "already_signed")
    assert_fault(run("phase-key", "sign", "--type=receipt", f"--key={key}", f"--key={key}",
                     stdin=b'{"a": 1}\n'), 65, "more than once", "already_signed")


def test_run_cli_safety_net_maps_an_escaped_oserror_to_74(capsys):
    from phase_core.cli.runner import run_cli

    def main(args):
        raise PermissionError(13, "Permission denied", "/some/file")

    code = run_cli("phase-test", "Usage:\n  phase-test [options]\n\nOptions:\n  -q  Quiet.\n",
                   "0", main, ["--log-format=json"])
    err = capsys.readouterr().err
    rec = json.loads(err.strip().splitlines()[-1])
    assert code == 74 and rec["error"] == "io_error" and rec["path"] == "/some/file"
    assert "Traceback" not in err


def test_permission_denied_state_is_74_naming_the_file(tmp_path, monkeypatch):
    """Root ignores file modes, so the refusal is injected where the kernel would give it."""
    import errno as errnos

    from phase_core.errors import IOFailure
    from phase_core.state import StateStore

    state = StateStore(tmp_path / "state.json")
    real_replace = os.replace

    def deny(src, dst, *a, **k):
        if str(dst).endswith("state.json"):
            raise PermissionError(errnos.EACCES, "Permission denied", str(dst))
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", deny)
    with pytest.raises(IOFailure) as e:
        state.commit_mark("boot/stable/x86_64", 7, "sha256:" + "0" * 64)
    rec = e.value.to_record()
    assert rec["exit_code"] == 74 and rec["errno"] == "EACCES"
    assert rec["path"] == str(tmp_path / "state.json") and "permission" in rec["hint"]
    assert not list(tmp_path.glob(".state.json.tmp-*"))  # no temp file left behind


def test_a_keyring_that_cannot_be_read_is_74_naming_it(tmp_path):
    kr = tmp_path / "keyring.d"
    kr.mkdir()
    last = assert_fault(run("phase-verify", f"--keys={kr}", BOOT), 74, kr, "io_error")
    assert last["errno"] == "EISDIR"
