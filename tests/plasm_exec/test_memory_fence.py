"""The memory fence covers all guest memory: hostile WAT guests with many memories and tables."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from phase_core.errors import Malformed
from phase_core.limits import DEFAULT_LIMITS
from plasm_exec.api import RunSpec

MiB = 1 << 20


def tables_and_memory(ntables: int) -> str:
    """Grows each of ``ntables`` tables and then its memory as far as allowed, touching
    every page, and exits 0."""
    tabs = "\n".join(f"(table $t{i} 0 funcref)" for i in range(ntables))
    grows = "\n".join(f"""(block $d{i} (loop $l{i}
        (br_if $d{i} (i32.eq (table.grow $t{i} (ref.func $f) (i32.const 65536))
                             (i32.const -1)))
        (br $l{i})))""" for i in range(ntables))
    return f"""(module
 (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
 (memory (export "memory") 1)
 {tabs}
 (elem declare func $f)
 (func $f)
 (func (export "_start") (local $p i32)
  {grows}
  (block $done (loop $g
    (local.set $p (memory.grow (i32.const 1)))
    (br_if $done (i32.eq (local.get $p) (i32.const -1)))
    (memory.fill (i32.mul (local.get $p) (i32.const 65536)) (i32.const 1) (i32.const 65536))
    (br $g)))
  (call $proc_exit (i32.const 0))))"""


def many_memories(n: int) -> str:
    mems = "\n".join(f"(memory $m{i} 1)" for i in range(1, n))
    return f'(module (memory (export "memory") 1) {mems} (func (export "_start")))'


def spec(memory_bytes: int) -> RunSpec:
    return RunSpec(argv=["g"], limits={**DEFAULT_LIMITS, "memory_bytes": memory_bytes})


def wat(text: str) -> bytes:
    import wasmtime
    return wasmtime.wat2wasm(text)


def test_more_than_one_memory_is_refused(executor):
    with pytest.raises(Malformed) as ei:
        executor.load(wat(many_memories(48)))
    assert ei.value.slug == "bad_module" and "multiple memories" in ei.value.message


def test_many_tables_end_with_memory_limit(executor):
    res = executor.run(executor.load(wat(tables_and_memory(64))), spec(64 * MiB))
    o = res.outcome
    assert (o.ended, o.exit_code, o.fuel_consumed) == ("memory_limit", None, 0)


def test_a_huge_initial_table_ends_with_memory_limit(executor):
    mod = wat('(module (memory (export "memory") 1) (table 5000000 funcref) '
              '(func (export "_start")))')
    assert executor.run(executor.load(mod), spec(64 * MiB)).outcome.ended == "memory_limit"


def test_tables_are_counted_against_the_limit(executor):
    """Tables that fill up shrink what the linear memory may grow to: the sum stays within."""
    from plasm_exec.engine import TABLE_ELEMENT_BYTES, memory_split
    linear, elems = memory_split(64 * MiB)
    assert linear + 2 * elems * TABLE_ELEMENT_BYTES <= 64 * MiB
    res = executor.run(executor.load(wat(tables_and_memory(2))), spec(64 * MiB))
    assert (res.outcome.ended, res.outcome.exit_code) == ("exited", 0)


# Measures from a fresh interpreter: a child forked from this (large) test process would
# start with this process's peak RSS as its own (Linux carries the high-water mark over
# fork and exec), hiding what plasm-exec itself used.
MEASURE = """
import os, subprocess, sys
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
_, status, usage = os.wait4(p.pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)
"""


def _peak_rss(tmp_path, name: str, text: str, limit: str) -> int:
    mod = tmp_path / f"{name}.wasm"
    mod.write_bytes(wat(text))
    out = subprocess.run([sys.executable, "-c", MEASURE, sys.executable, "-m", "plasm_exec",
                          "run", "--no-cache", f"--max-memory={limit}", str(mod)],
                         capture_output=True, text=True, check=True, timeout=120,
                         env={**os.environ, "PHASE_HOME": str(tmp_path / "h")}).stdout
    code, kib = map(int, out.split())
    assert code in (0, 153)  # exited, or ended memory_limit
    return kib * 1024  # KiB on Linux


@pytest.mark.parametrize("ntables", [2, 8])
def test_peak_rss_stays_within_the_limit(tmp_path, ntables):
    """A guest that takes every byte it is allowed (tables and memory, all touched) adds at
    most the limit (plus wasmtime's fixed per-run overhead) to the process's peak RSS."""
    base = _peak_rss(tmp_path, "small", tables_and_memory(0), "1M")
    hostile = _peak_rss(tmp_path, "hostile", tables_and_memory(ntables), "64M")
    assert hostile - base <= 64 * MiB + 8 * MiB, (base, hostile)


BIG_WRITE = """(module
 (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
 (memory (export "memory") 160)
 (data (i32.const 0) "\\10\\00\\00\\00\\00\\00\\80\\00")
 (func (export "_start")
  (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"""

CHILD = """
import json, resource, sys, wasmtime
from phase_core.limits import DEFAULT_LIMITS
from plasm_exec.api import Executor, RunSpec
import signal
resource.setrlimit(resource.RLIMIT_FSIZE, (4 << 20, 4 << 20))  # no file may pass 4 MiB
signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # and trying to kills the process
ex = Executor(None, disk_cache=False)
prog = ex.load(wasmtime.wat2wasm(sys.argv[1]))
res = ex.run(prog, RunSpec(argv=["g"], limits={**DEFAULT_LIMITS, "output_bytes": 1 << 20}))
print(json.dumps([res.outcome.ended, res.stdout_bytes, len(res.stdout)]))
"""


def test_one_huge_write_never_lands_past_the_output_limit():
    """One fd_write of 8 MiB with a 1 MiB budget: the bytes past the budget are dropped as
    they arrive, never stored. The child may not grow any file past 4 MiB (a memfd holding
    the whole write would kill it with SIGXFSZ)."""
    p = subprocess.run([sys.executable, "-c", CHILD, BIG_WRITE], capture_output=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr.decode()[-2000:]
    import json
    assert json.loads(p.stdout) == ["output_limit", 1 << 20, 1 << 20]
