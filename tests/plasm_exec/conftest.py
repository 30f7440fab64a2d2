"""Tiny WAT guests, compiled at test time, and a fresh PHASE_HOME per test."""

from __future__ import annotations

from pathlib import Path

import pytest

W = '(import "wasi_snapshot_preview1" "{0}" (func ${0} {1}))'
IMPORTS = {
    "fd_read": "(param i32 i32 i32 i32) (result i32)",
    "fd_write": "(param i32 i32 i32 i32) (result i32)",
    "proc_exit": "(param i32)",
    "clock_time_get": "(param i32 i64 i32) (result i32)",
    "random_get": "(param i32 i32) (result i32)",
}


def module(body: str, imports: tuple[str, ...] = (), memory: str = "1") -> str:
    imps = "\n".join(W.format(n, IMPORTS[n]) for n in imports)
    return f'(module {imps}\n (memory (export "memory") {memory})\n{body})'


# write(fd, ptr, len) with a loop over short writes; returns on error
WRITE_FN = """
 (func $out (param $fd i32) (param $p i32) (param $n i32)
  (block $done (loop $w
   (br_if $done (i32.eqz (local.get $n)))
   (i32.store (i32.const 16) (local.get $p)) (i32.store (i32.const 20) (local.get $n))
   (br_if $done (call $fd_write (local.get $fd) (i32.const 16) (i32.const 1) (i32.const 24)))
   (local.set $p (i32.add (local.get $p) (i32.load (i32.const 24))))
   (local.set $n (i32.sub (local.get $n) (i32.load (i32.const 24))))
   (br $w))))
"""

GUESTS = {
    # copies stdin to stdout
    "cat": module(WRITE_FN + """
 (func (export "_start")
  (loop $l
   (i32.store (i32.const 0) (i32.const 1024)) (i32.store (i32.const 4) (i32.const 4096))
   (i32.store (i32.const 8) (i32.const 0))
   (br_if 1 (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
   (br_if 1 (i32.eqz (i32.load (i32.const 8))))
   (call $out (i32.const 1) (i32.const 1024) (i32.load (i32.const 8)))
   (br $l)))""", ("fd_read", "fd_write")),
    "spin": module('(func (export "_start") (loop $l (br $l)))'),
    "unreachable": module('(func (export "_start") unreachable)'),
    "recurse": module('(func $f (call $f)) (func (export "_start") (call $f))'),
    "grow": module("""(func (export "_start")
        (loop $l (br_if $l (i32.ne (memory.grow (i32.const 1)) (i32.const -1)))) unreachable)"""),
    "bigmem": module('(func (export "_start"))', memory="4096"),
    "flood": module(WRITE_FN + """(func (export "_start")
        (loop $l (call $out (i32.const 1) (i32.const 0) (i32.const 4096)) (br $l)))""",
                    ("fd_write",)),
    # reads stdin forever, also after EOF (a guest stuck on input)
    "stdin_spin": module("""(func (export "_start")
        (loop $l (i32.store (i32.const 0) (i32.const 1024))
         (i32.store (i32.const 4) (i32.const 64))
         (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
         (br $l)))""",
                         ("fd_read",)),
    # writes 8 bytes of clock and 16 random bytes to stdout
    "clockrand": module(WRITE_FN + """(func (export "_start")
        (drop (call $clock_time_get (i32.const 0) (i64.const 1) (i32.const 100)))
        (drop (call $random_get (i32.const 108) (i32.const 16)))
        (call $out (i32.const 1) (i32.const 100) (i32.const 24)))""",
                        ("fd_write", "clock_time_get", "random_get")),
    "no_start": module('(func (export "main"))'),
    "no_memory": '(module (func (export "_start")))',
    "bad_import": '(module (import "env" "f" (func)) (memory (export "memory") 1) '
                  '(func (export "_start")))',
}


def exit_guest(code: int) -> str:
    return module(f'(func (export "_start") (call $proc_exit (i32.const {code})))',
                  ("proc_exit",))


@pytest.fixture(scope="session")
def wasm() -> dict[str, bytes]:
    import wasmtime
    return {name: wasmtime.wat2wasm(src) for name, src in GUESTS.items()}


@pytest.fixture(scope="session")
def wasm_exit():
    import wasmtime
    return lambda code: wasmtime.wat2wasm(exit_guest(code))


@pytest.fixture
def phase_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("PHASE_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def executor(tmp_path_factory: pytest.TempPathFactory):
    from plasm_exec.api import Executor
    return Executor(tmp_path_factory.mktemp("exhome"))


@pytest.fixture
def write_guest(tmp_path: Path, wasm: dict[str, bytes]):
    def write(name: str) -> Path:
        p = tmp_path / f"{name}.wasm"
        p.write_bytes(wasm[name])
        return p
    return write


EXAMPLES = Path(__file__).resolve().parents[2] / "packages" / "plasm-exec" / "examples" / "build"
