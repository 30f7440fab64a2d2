"""The four fences, traps and exit codes, through the library API (one shared Executor)."""

from __future__ import annotations

import threading

import pytest

from phase_core.errors import InputError, Malformed, TooLarge
from phase_core.limits import DEFAULT_LIMITS
from plasm_exec.api import RunSpec, module_id_of
from tests.conftest import BROKEN_MODULE


def spec(**lim: int) -> RunSpec:
    limits = dict(DEFAULT_LIMITS)
    limits.update(lim)
    return RunSpec(argv=["g"], limits=limits)


def check_next_run_ok(executor, wasm) -> None:
    res = executor.run(executor.load(wasm["cat"]), spec(), stdin=b"still fine")
    assert res.outcome.ended == "exited" and res.stdout == b"still fine"


def test_cat_binds_stdin_and_stdout(executor, wasm):
    res = executor.run(executor.load(wasm["cat"]), spec(), stdin=b"hello \xe2\x9c\x93")
    assert (res.outcome.ended, res.outcome.exit_code) == ("exited", 0)
    assert res.stdout == b"hello \xe2\x9c\x93"
    assert res.stdin_id == module_id_of(b"hello \xe2\x9c\x93") == res.stdout_id
    assert res.outcome.fuel_exact and res.outcome.fuel_consumed > 0


@pytest.mark.parametrize("code", [0, 1, 2, 42, 64, 125])
def test_exit_codes_preserved(executor, wasm_exit, code):
    res = executor.run(executor.load(wasm_exit(code)), spec())
    assert (res.outcome.ended, res.outcome.exit_code, res.outcome.trap) == ("exited", code, None)


def test_proc_exit_out_of_range_is_a_trap(executor, wasm_exit, wasm):
    res = executor.run(executor.load(wasm_exit(200)), spec())
    assert (res.outcome.ended, res.outcome.trap) == ("trapped", "bad_exit_status")
    check_next_run_ok(executor, wasm)


def test_out_of_fuel_is_exact(executor, wasm):
    res = executor.run(executor.load(wasm["spin"]), spec(fuel=100_000))
    o = res.outcome
    assert (o.ended, o.exit_code, o.fuel_consumed, o.fuel_exact) == \
        ("out_of_fuel", None, 100_000, True)
    check_next_run_ok(executor, wasm)


def test_timeout_by_wall_clock(executor, wasm):
    res = executor.run(executor.load(wasm["spin"]), spec(wall_ms=50))
    assert res.outcome.ended == "timeout"
    assert res.outcome.fuel_exact is False
    check_next_run_ok(executor, wasm)


def test_memory_bomb(executor, wasm):
    res = executor.run(executor.load(wasm["grow"]), spec(memory_bytes=1 << 20))
    assert res.outcome.ended == "memory_limit"
    check_next_run_ok(executor, wasm)


def test_initial_memory_over_limit_fails_cleanly(executor, wasm):
    res = executor.run(executor.load(wasm["bigmem"]), spec(memory_bytes=16 << 20))
    assert (res.outcome.ended, res.outcome.fuel_consumed) == ("memory_limit", 0)
    check_next_run_ok(executor, wasm)


def test_output_flood(executor, wasm):
    res = executor.run(executor.load(wasm["flood"]), spec(output_bytes=10_000))
    assert res.outcome.ended == "output_limit"
    assert res.stdout_bytes == 10_000 and len(res.stdout) == 10_000
    check_next_run_ok(executor, wasm)


@pytest.mark.parametrize(("name", "trap"), [("unreachable", "unreachable"),
                                            ("recurse", "stack_overflow")])
def test_traps_are_named(executor, wasm, name, trap):
    res = executor.run(executor.load(wasm[name]), spec())
    assert (res.outcome.ended, res.outcome.trap, res.outcome.exit_code) == ("trapped", trap, None)
    check_next_run_ok(executor, wasm)


@pytest.mark.parametrize(("data", "err", "slug"), [
    (b"not wasm at all", Malformed, "bad_module"),
    (BROKEN_MODULE, Malformed, "bad_module"),  # truncated section
    (b"\0asm\x0d\0\x01\0", Malformed, "bad_module"),  # a component
])
def test_bad_bytes(executor, wasm, data, err, slug):
    with pytest.raises(err) as ei:
        executor.load(data)
    assert ei.value.slug == slug
    check_next_run_ok(executor, wasm)


@pytest.mark.parametrize(("name", "slug"), [("no_start", "no_start"),
                                            ("no_memory", "no_memory"),
                                            ("bad_import", "bad_import")])
def test_bad_modules(executor, wasm, name, slug):
    with pytest.raises(InputError) as ei:
        executor.load(wasm[name])
    assert ei.value.slug == slug and ei.value.exit_code == 65
    check_next_run_ok(executor, wasm)


def test_module_size_cap(executor, monkeypatch):
    from plasm_exec import wasmheader
    monkeypatch.setattr(wasmheader, "MAX_MODULE_BYTES", 10)
    with pytest.raises(TooLarge):
        executor.load(b"\0asm\x01\0\0\0" + b"\0" * 10)


def test_deterministic_profile_reproduces(executor, wasm):
    prog = executor.load(wasm["clockrand"])
    det = RunSpec(argv=["g"], deterministic=True)
    a, b = executor.run(prog, det), executor.run(prog, det)
    assert a.stdout == b.stdout and a.outcome.fuel_consumed == b.outcome.fuel_consumed
    free = executor.run(prog, RunSpec(argv=["g"]))
    assert free.stdout[8:] != a.stdout[8:]  # real randomness differs from the seeded stream


def test_threads_run_concurrently(executor, wasm):
    prog = executor.load(wasm["cat"])
    results: dict[int, bytes] = {}

    def work(i: int) -> None:
        for j in range(20):
            r = executor.run(prog, spec(), stdin=f"{i}-{j}".encode())
            assert r.stdout == f"{i}-{j}".encode()
        results[i] = r.stdout

    ts = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert sorted(results) == [0, 1, 2, 3]


def test_cancel_from_another_thread(executor, wasm):
    prog = executor.load(wasm["spin"])
    ctl = executor.new_control()
    t = threading.Thread(target=lambda: (ctl.started.wait(), ctl.stop("cancelled")))
    t.start()
    res = executor.run(prog, spec(), control=ctl)
    t.join()
    assert res.outcome.ended == "timeout" and res.outcome.message


def test_timeout_reports_the_fuel_really_consumed(executor, wasm):
    """A tight loop stopped by the wall clock used to report 0 fuel (the counter lived in a
    register when the epoch trap fired); the fuel slices write it back."""
    res = executor.run(executor.load(wasm["spin"]), spec(wall_ms=1000, fuel=10**15))
    o = res.outcome
    assert o.ended == "timeout" and not o.fuel_exact
    assert 0 < o.fuel_consumed < 10**15


def test_stopped_by_output_fence_reports_fuel(executor, wasm):
    res = executor.run(executor.load(wasm["flood"]), spec(output_bytes=1 << 20))
    assert res.outcome.ended == "output_limit" and res.outcome.fuel_consumed > 0
