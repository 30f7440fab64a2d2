"""Ctrl-C and SIGTERM stop plasm-exec promptly: real processes, a real PTY and a real FIFO."""

from __future__ import annotations

import fcntl
import json
import os
import select
import signal
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from phase_core import envelope, manifest
from phase_core.identity import Identity

EXAMPLES = Path(__file__).resolve().parents[2] / "packages" / "plasm-exec" / "examples" / "build"

PY = sys.executable
BAD = ("Traceback", "Exception ignored", "free()", "panicked")


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "PHASE_HOME": str(home)}


def _read_until(fd: int, needle: bytes, buf: bytearray, limit_s: float = 60.0) -> None:
    """Read ``fd`` until ``needle`` shows up (the limit only guards against a hang)."""
    while needle not in buf:
        r, _, _ = select.select([fd], [], [], limit_s)
        assert r, f"no {needle!r} in {bytes(buf)[-500:]!r}"
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the pty's other side is closed
            chunk = b""
        assert chunk, f"EOF before {needle!r}: {bytes(buf)[-500:]!r}"
        buf += chunk


def _drain(fd: int, buf: bytearray) -> None:
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            return
        if not chunk:
            return
        buf += chunk


def _assert_clean(text: str) -> None:
    for bad in BAD:
        assert bad not in text, text
    # a terminal echoes ^C in front of the next line
    events = [json.loads(ln[ln.index("{"):])["event"] for ln in text.splitlines() if "{" in ln]
    assert "plasm.interrupted" in events and "plasm.run.ended" not in events


def test_ctrl_c_on_a_terminal_stops_a_spinning_guest(tmp_path):
    mod = EXAMPLES / "spin.wasm"
    receipt = tmp_path / "r.json"
    master, slave = os.openpty()

    def as_terminal_session() -> None:
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    p = subprocess.Popen([PY, "-m", "plasm_exec", "run", "-vv", "--log-format=json", "--timeout=20",
                          f"--receipt={receipt}", str(mod)],
                         stdin=slave, stdout=slave, stderr=slave, env=_env(tmp_path / "h"),
                         preexec_fn=as_terminal_session)
    os.close(slave)
    buf = bytearray()
    try:
        _read_until(master, b"plasm.run.started", buf)
        os.write(master, b"\x03")  # ^C, turned into SIGINT by the terminal
        rc = p.wait(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        _drain(master, buf)
        os.close(master)
    text = buf.decode(errors="replace")
    assert rc == 130, text
    _assert_clean(text)
    assert not receipt.exists()
    assert not Path(f"{receipt}".replace(".json", ".manifest.json")).exists()


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_while_blocked_on_stdin_from_a_fifo(tmp_path, sig, code):
    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)
    rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    wfd = os.open(fifo, os.O_WRONLY)  # held open: the guest never sees EOF on its own
    os.set_blocking(rfd, True)
    receipt = tmp_path / "r.json"
    p = subprocess.Popen([PY, "-m", "plasm_exec", "run", "-vv", "--timeout=30",
                          f"--receipt={receipt}", str(EXAMPLES / "stdin_block.wasm")],
                         stdin=rfd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=_env(tmp_path / "h"))
    os.close(rfd)
    buf = bytearray()
    try:
        os.write(wfd, b"some input the guest reads and discards\n")
        _read_until(p.stderr.fileno(), b"plasm.run.started", buf)
        p.send_signal(sig)
        out, err = p.communicate(timeout=60)
    finally:
        os.close(wfd)
        if p.poll() is None:
            p.kill()
            p.wait()
    text = (bytes(buf) + err).decode(errors="replace")
    assert p.returncode == code, text
    assert out == b""
    _assert_clean(text)
    assert not receipt.exists()


@pytest.mark.parametrize(("guest", "sig", "code"), [("spin", signal.SIGINT, 130),
                                                    ("sleeper", signal.SIGTERM, 143)])
def test_signal_in_job_mode(tmp_path, guest, sig, code):
    home = tmp_path / "h"
    mod = EXAMPLES / "spin.wasm" if guest == "spin" else _sleeper(tmp_path)
    from phase_core.canonical import content_id
    body = manifest.build(module=content_id(mod.read_bytes()), stdin=None,
                          now=1_800_000_000)
    rec = {"v": 1, "type": "job", "manifest": envelope.sign(manifest.TYPE, body,
                                                             [Identity.generate()]),
           "module_path": str(mod)}
    p = subprocess.Popen([PY, "-m", "plasm_exec", "job", "-vv", "--now=2027-01-15T08:00:00Z",
                          "--timeout=30"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=_env(home))
    buf = bytearray()
    try:
        p.stdin.write((json.dumps(rec) + "\n").encode())
        p.stdin.flush()  # stdin stays open: the job loop would wait for more records
        _read_until(p.stderr.fileno(), b"plasm.run.started", buf)
        p.send_signal(sig)
        rc = p.wait(timeout=50)  # well before the sleeper's 60 s
        out, err = p.stdout.read(), p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdin.close()
    text = (bytes(buf) + err).decode(errors="replace")
    assert rc == code, text
    _assert_clean(text)
    assert "did not stop" not in text  # stopped by the run, not by the grace exit
    assert b"job_result" not in out  # no receipt for the interrupted job


def _sleeper(tmp_path: Path) -> Path:
    """A guest asleep in poll_oneoff on a 60 s clock: no yield comes until it wakes."""
    import struct

    import wasmtime
    sub = struct.pack("<QB7xIIQQH6x", 0, 0, 1, 0, 60 * 10**9, 0, 0)
    data = "".join(f"\\{b:02x}" for b in sub)
    mod = tmp_path / "sleeper.wasm"
    mod.write_bytes(wasmtime.wat2wasm(f"""(module
 (import "wasi_snapshot_preview1" "poll_oneoff"
   (func $poll (param i32 i32 i32 i32) (result i32)))
 (memory (export "memory") 1)
 (data (i32.const 0) "{data}")
 (func (export "_start")
  (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))))"""))
    return mod


def test_signal_while_asleep_in_poll_oneoff(tmp_path):
    receipt = tmp_path / "r.json"
    p = subprocess.Popen([PY, "-m", "plasm_exec", "run", "-vv", "--timeout=300",
                          f"--receipt={receipt}", str(_sleeper(tmp_path))],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=_env(tmp_path / "h"))
    buf = bytearray()
    try:
        _read_until(p.stderr.fileno(), b"plasm.run.started", buf)
        p.send_signal(signal.SIGINT)
        err = p.communicate(timeout=50)[1]  # well before the guest's 60 s sleep ends
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    text = (bytes(buf) + err).decode(errors="replace")
    assert p.returncode == 130, text
    _assert_clean(text)
    assert "did not stop" not in text  # the guest stopped: no hard exit after the grace
    assert not receipt.exists()
