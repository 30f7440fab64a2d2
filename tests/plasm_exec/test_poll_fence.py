"""A guest asleep in WASI poll_oneoff meets the wall clock, cancel and signals (pollfence)."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from phase_core.errors import Interrupted
from phase_core.limits import DEFAULT_LIMITS
from plasm_exec.api import RunSpec

PY = sys.executable
HOUR_NS = 3600 * 10**9
HANG_GUARD_S = 60  # only guards against a hang; never the assertion
CLOCK, FD_READ, FD_WRITE = 0, 1, 2
REALTIME, MONOTONIC = 0, 1
EBADF, EFAULT, EINVAL = 8, 21, 28


def sub(userdata: int, tag: int, fd_or_clock: int, timeout: int = 0, flags: int = 0) -> bytes:
    """One WASI preview1 subscription (48 bytes)."""
    return struct.pack("<QB7xIIQQH6x", userdata, tag, fd_or_clock, 0, timeout, 0, flags)


def sleeper(subs: list[bytes], *, nsubs: int | None = None, in_ptr: int = 1024,
            clock_around: bool = False, tail: str = "") -> bytes:
    """A guest that polls ``subs`` once and writes to stdout: errno u32, nevents u32, the
    events (32 bytes each) and, with ``clock_around``, the realtime clock read before and
    after the call (u64 each); then it runs the WAT instructions ``tail``."""
    import wasmtime
    data = "".join(f"\\{b:02x}" for b in b"".join(subs))
    n = len(subs) if nsubs is None else nsubs
    return wasmtime.wat2wasm(f"""(module
 (import "wasi_snapshot_preview1" "poll_oneoff"
   (func $poll (param i32 i32 i32 i32) (result i32)))
 (import "wasi_snapshot_preview1" "fd_write"
   (func $fd_write (param i32 i32 i32 i32) (result i32)))
 (import "wasi_snapshot_preview1" "clock_time_get"
   (func $clock (param i32 i64 i32) (result i32)))
 (import "wasi_snapshot_preview1" "fd_read"
   (func $fd_read (param i32 i32 i32 i32) (result i32)))
 (memory (export "memory") 1)
 (data (i32.const {in_ptr}) "{data}")
 (func (export "_start")
  (drop (call $clock (i32.const 0) (i64.const 1) (i32.const 64)))
  (i32.store (i32.const 8)
   (call $poll (i32.const {in_ptr}) (i32.const 4096) (i32.const {n}) (i32.const 12)))
  (drop (call $clock (i32.const 0) (i64.const 1) (i32.const 72)))
  (call $out (i32.const 8) (i32.const 8))
  (call $out (i32.const 4096) (i32.mul (i32.load (i32.const 12)) (i32.const 32)))
  (call $out (i32.const 64) (i32.const {16 if clock_around else 0}))
  {tail})
 ;; wasmtime writes one iovec per fd_write: one call per piece, whole pieces assumed
 (func $out (param $p i32) (param $n i32)
  (i32.store (i32.const 16) (local.get $p)) (i32.store (i32.const 20) (local.get $n))
  (drop (call $fd_write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 40)))))""")


def parse(out: bytes, clock_around: bool = False):
    errno, nevents = struct.unpack_from("<II", out)
    events = [struct.unpack_from("<QHBxxxxxQH", out, 8 + 32 * i) for i in range(nevents)]
    assert len(out) == 8 + 32 * nevents + (16 if clock_around else 0)
    clocks = struct.unpack_from("<QQ", out, 8 + 32 * nevents) if clock_around else None
    return errno, events, clocks


def _run(executor, wasm: bytes, *, wall_ms: int = HANG_GUARD_S * 1000,
         deterministic: bool = False, **kw):
    """Run in a thread; a guest still asleep after HANG_GUARD_S fails the test."""
    limits = {**DEFAULT_LIMITS, "wall_ms": wall_ms}
    spec = RunSpec(argv=["g"], limits=limits, deterministic=deterministic)
    prog = executor.load(wasm)
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["value"] = executor.run(prog, spec, **kw)
        except BaseException as e:
            box["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(HANG_GUARD_S)
    assert not t.is_alive(), "the run did not end (the guest is still asleep)"
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]


# -- what the guest sees ----------------------------------------------------------

def test_short_sleep_returns_its_clock_event(executor):
    res = _run(executor, sleeper([sub(0x1234, CLOCK, MONOTONIC, 10**7),
                                  sub(0x99, CLOCK, REALTIME, HOUR_NS)]))
    assert res.outcome.ended == "exited"
    errno, events, _ = parse(res.stdout)
    assert errno == 0
    # only the due clock: userdata, error 0, type clock, nbytes 0, flags 0
    assert events == [(0x1234, 0, CLOCK, 0, 0)]


def test_absolute_clocks_in_the_past_are_due_at_once(executor):
    res = _run(executor, sleeper([sub(1, CLOCK, REALTIME, time.time_ns() - 10**9, 1),
                                  sub(2, CLOCK, MONOTONIC, 0, 1)]))
    errno, events, _ = parse(res.stdout)
    assert (errno, [e[0] for e in events]) == (0, [1, 2])


def test_fd_subscriptions_are_ready_at_once(executor):
    res = _run(executor, sleeper([sub(7, CLOCK, MONOTONIC, HOUR_NS), sub(8, FD_READ, 0),
                                  sub(9, FD_WRITE, 1), sub(10, FD_WRITE, 2)]), stdin=b"in")
    assert res.outcome.ended == "exited"
    errno, events, _ = parse(res.stdout)
    assert errno == 0
    assert events == [(8, 0, FD_READ, 1, 0), (9, 0, FD_WRITE, 1, 0), (10, 0, FD_WRITE, 1, 0)]


@pytest.mark.parametrize(("subs", "kw", "want"), [
    ([], {}, EINVAL),  # no subscriptions
    ([sub(1, CLOCK, 2, 10**6)], {}, EINVAL),  # process CPU-time clock
    ([sub(1, 3, 0)], {}, EINVAL),  # unknown tag
    ([sub(1, FD_WRITE, 0)], {}, EBADF),  # stdin is not writable
    ([sub(1, FD_READ, 1)], {}, EBADF),  # stdout is not readable
    ([sub(1, CLOCK, MONOTONIC, 0)], {"in_ptr": 1028}, EFAULT),  # misaligned
    ([sub(1, CLOCK, MONOTONIC, 0)], {"nsubs": 2000}, EFAULT),  # past the memory's end
    ([sub(1, CLOCK, MONOTONIC, 0)], {"nsubs": 5000}, EINVAL),  # over MAX_SUBSCRIPTIONS
])
def test_bad_subscriptions_fail_the_call(executor, subs, kw, want):
    res = _run(executor, sleeper(subs, **kw))
    assert res.outcome.ended == "exited"
    errno, events, _ = parse(res.stdout)
    assert (errno, events) == (want, [])


def test_deterministic_sleep_moves_the_fixed_clock_not_the_wall(executor):
    wasm = sleeper([sub(5, CLOCK, MONOTONIC, HOUR_NS)], clock_around=True)
    # a 1 s wall clock: a real hour-long sleep would end `timeout`
    runs = [_run(executor, wasm, wall_ms=1000, deterministic=True) for _ in range(2)]
    assert [r.outcome.ended for r in runs] == ["exited", "exited"]
    errno, events, (before, after) = parse(runs[0].stdout, clock_around=True)
    assert (errno, events) == (0, [(5, 0, CLOCK, 0, 0)])
    assert after - before == HOUR_NS + 10**6  # the sleep, then 1 ms per read
    assert runs[0].stdout == runs[1].stdout
    assert runs[0].outcome.fuel_consumed == runs[1].outcome.fuel_consumed


def test_deterministic_absolute_sleep_in_the_past_keeps_the_clock(executor):
    wasm = sleeper([sub(5, CLOCK, REALTIME, 1, 1)], clock_around=True)
    res = _run(executor, wasm, deterministic=True)
    _, events, (before, after) = parse(res.stdout, clock_around=True)
    assert [e[0] for e in events] == [5]
    assert after - before == 10**6  # the clock never goes back


# -- the fences -------------------------------------------------------------------

SLEEPERS = {
    "relative": lambda: sleeper([sub(1, CLOCK, MONOTONIC, HOUR_NS)]),
    "abs_realtime": lambda: sleeper([sub(1, CLOCK, REALTIME, time.time_ns() + HOUR_NS, 1)]),
    "abs_monotonic": lambda: sleeper([sub(1, CLOCK, MONOTONIC, HOUR_NS, 1)]),
}


@pytest.mark.parametrize("kind", sorted(SLEEPERS))
def test_wall_clock_ends_a_sleeping_guest(executor, kind):
    res = _run(executor, SLEEPERS[kind](), wall_ms=300)
    assert res.outcome.ended == "timeout"
    assert res.outcome.fuel_exact is False
    assert res.stdout == b""  # stopped in its sleep: it never saw a wake-up


def test_cancel_stops_a_sleeping_guest(executor):
    ctl = executor.new_control()
    cancel = threading.Event()
    t = threading.Thread(target=lambda: (ctl.started.wait(), cancel.set()))
    t.start()
    with pytest.raises(Interrupted):
        _run(executor, SLEEPERS["relative"](), wall_ms=3_600_000, control=ctl, cancel=cancel)
    t.join()
    assert ctl.stop_reason == "interrupted"
    # the runtime is fine afterwards (no wasmtime-py exception left behind)
    res = _run(executor, sleeper([sub(3, CLOCK, MONOTONIC, 0)]))
    assert parse(res.stdout)[1] == [(3, 0, CLOCK, 0, 0)]


def _cli(tmp_path: Path, args: list[str], wasm: bytes) -> subprocess.Popen:
    mod = tmp_path / "sleeper.wasm"
    mod.write_bytes(wasm)
    return subprocess.Popen([PY, "-m", "plasm_exec", "run", "-vv", "--log-format=json", *args,
                             str(mod)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE,
                            env={**os.environ, "PHASE_HOME": str(tmp_path / "h")})


@pytest.mark.parametrize("kind", sorted(SLEEPERS))
def test_run_timeout_ends_a_sleeping_guest(tmp_path, kind):
    receipt = tmp_path / "r.json"
    p = _cli(tmp_path, ["--timeout=1s", f"--receipt={receipt}"], SLEEPERS[kind]())
    try:
        out, err = p.communicate(timeout=HANG_GUARD_S)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 152, err.decode(errors="replace")
    body = json.loads(receipt.read_text())["body"]
    assert body["ended"] == "timeout"
    assert out == b""


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_stops_a_sleeping_guest_without_the_grace_exit(tmp_path, sig, code):
    p = _cli(tmp_path, ["--timeout=300"], SLEEPERS["relative"]())
    buf = b""
    try:
        while b"plasm.run.started" not in buf:
            line = p.stderr.readline()
            assert line, buf
            buf += line
        p.send_signal(sig)
        err = p.communicate(timeout=HANG_GUARD_S)[1]
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    text = (buf + err).decode(errors="replace")
    assert p.returncode == code, text
    events = [json.loads(ln) for ln in text.splitlines() if ln.startswith("{")]
    stops = [e for e in events if e["event"] == "plasm.interrupted"]
    assert stops, text
    # the guest stopped by itself: not the hard exit after signals.GRACE_S
    assert not any("did not stop" in e.get("message", "") for e in stops), text
    assert "Traceback" not in text


def test_a_silent_stdin_pipe_is_ready_and_its_read_ends_at_the_deadline(tmp_path):
    # `run` mode: stdin is the pump's pipe. poll_oneoff reports it ready at once (the
    # hour-long clock beside it does not matter); the fd_read that follows blocks until the
    # pump closes the pipe at the deadline, and the run ends `timeout`.
    read_then_spin = """
  (i32.store (i32.const 16) (i32.const 2048)) (i32.store (i32.const 20) (i32.const 64))
  (drop (call $fd_read (i32.const 0) (i32.const 16) (i32.const 1) (i32.const 40)))
  (loop $l (br $l))"""
    wasm = sleeper([sub(1, FD_READ, 0), sub(2, CLOCK, MONOTONIC, HOUR_NS)], tail=read_then_spin)
    receipt = tmp_path / "r.json"
    mod = tmp_path / "poll_stdin.wasm"
    mod.write_bytes(wasm)
    p = subprocess.Popen([PY, "-m", "plasm_exec", "run", "--timeout=1s", f"--receipt={receipt}",
                          str(mod)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE,
                         env={**os.environ, "PHASE_HOME": str(tmp_path / "h")})
    try:  # stdin stays open and silent (communicate() would close it)
        p.wait(timeout=HANG_GUARD_S)
        out, err = p.stdout.read(), p.stderr.read()
    finally:
        p.stdin.close()
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 152, err.decode(errors="replace")
    assert json.loads(receipt.read_text())["body"]["ended"] == "timeout"
    assert parse(out) == (0, [(1, 0, FD_READ, 1, 0)], None)


def test_concurrent_sleepers_keep_their_own_outcomes(executor):
    # the per-run state is thread-local: one run stopped in its sleep does not mark another
    box: dict[str, object] = {}
    long = threading.Thread(target=lambda: box.update(
        long=_run(executor, SLEEPERS["relative"](), wall_ms=300)))
    long.start()
    shorts = []
    guard = time.monotonic() + HANG_GUARD_S
    while (long.is_alive() or len(shorts) < 5) and time.monotonic() < guard:  # across its stop
        shorts.append(_run(executor, sleeper([sub(len(shorts), CLOCK, MONOTONIC, 10**7)])))
    long.join(HANG_GUARD_S)
    assert box["long"].outcome.ended == "timeout"  # type: ignore[attr-defined]
    for i, res in enumerate(shorts):
        assert (res.outcome.ended, parse(res.stdout)[1]) == ("exited", [(i, 0, CLOCK, 0, 0)])
