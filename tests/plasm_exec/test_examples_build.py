"""The example guests in packages/plasm-exec/examples: rebuilt from source, they match the
committed modules byte for byte, and the well-behaved ones compute the right answers.

Guests run directly under wasmtime-py here (file-backed stdio, never stdout_custom), so
these tests check the examples themselves, independent of plasm-exec's engine.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
import wasmtime

EXAMPLES = Path(__file__).resolve().parents[2] / "packages" / "plasm-exec" / "examples"
BUILT = EXAMPLES / "build"
FUEL = 10**10

_spec = importlib.util.spec_from_file_location("examples_build", EXAMPLES / "build.py")
assert _spec is not None and _spec.loader is not None
build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build)

NO_TOOLCHAIN = build.toolchain_problem()


def _skip_without_toolchain() -> None:
    if NO_TOOLCHAIN is None:
        return
    message = (
        f"clang wasm32-wasi toolchain absent ({NO_TOOLCHAIN}); "
        f"apt-get install {' '.join(build.APT_PACKAGES)}"
    )
    if os.environ.get("CI"):
        pytest.fail(f"CI must install the toolchain: {message}")
    pytest.skip(message)


# --- reproducible build -------------------------------------------------------------------


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run the documented build command into a temp dir (C guests only with the toolchain)."""
    out = tmp_path_factory.mktemp("examples-build")
    names = [] if NO_TOOLCHAIN is None else [*build.WAT_GUESTS, *build.GENERATED]
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "build.py"), "--out", str(out), *names],
        capture_output=True,
        text=True,
        check=False,
        cwd="/",
    )
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.mark.parametrize("name", build.ALL)
def test_rebuild_matches_committed_module(rebuilt: Path, name: str) -> None:
    if name in build.C_GUESTS:
        _skip_without_toolchain()
    fresh = (rebuilt / f"{name}.wasm").read_bytes()
    committed = (BUILT / f"{name}.wasm").read_bytes()
    assert fresh == committed, (
        f"{name}.wasm rebuilt from src/ differs from build/{name}.wasm: run "
        "packages/plasm-exec/examples/build.py and commit build/ (a different toolchain "
        "version also changes the C guests; see examples/README.md)"
    )


def test_rebuild_writes_the_same_sha256sums(rebuilt: Path) -> None:
    _skip_without_toolchain()
    assert (rebuilt / "SHA256SUMS").read_bytes() == (BUILT / "SHA256SUMS").read_bytes()


def test_every_committed_module_has_its_source_and_a_checksum() -> None:
    committed = sorted(p.name for p in BUILT.iterdir())
    assert committed == sorted([*(f"{n}.wasm" for n in build.ALL), "SHA256SUMS"])
    sources = [
        *(f"{n}.c" for n in build.C_GUESTS),
        *(f"{n}.wat" for n in build.WAT_GUESTS),
        *(f"gen_{n}.py" for n in build.GENERATED),
    ]
    assert sorted(p.name for p in (EXAMPLES / "src").iterdir() if p.is_file()) == sorted(sources)
    sums = {
        line.split("  ")[1]: line.split("  ")[0]
        for line in (BUILT / "SHA256SUMS").read_text().splitlines()
    }
    assert sums == {
        f"{n}.wasm": hashlib.sha256((BUILT / f"{n}.wasm").read_bytes()).hexdigest()
        for n in build.ALL
    }


# --- running the guests -------------------------------------------------------------------


class Guests:
    """One fuel-metering engine; each committed module compiled once."""

    def __init__(self) -> None:
        config = wasmtime.Config()
        config.consume_fuel = True
        self.engine = wasmtime.Engine(config)
        self.linker = wasmtime.Linker(self.engine)
        self.linker.define_wasi()
        self.modules: dict[str, wasmtime.Module] = {}

    def module(self, name: str) -> wasmtime.Module:
        if name not in self.modules:
            self.modules[name] = wasmtime.Module.from_file(self.engine, str(BUILT / f"{name}.wasm"))
        return self.modules[name]

    def run(
        self,
        tmp: Path,
        name: str,
        stdin: bytes = b"",
        argv: tuple[str, ...] = (),
        env: tuple[tuple[str, str], ...] = (),
        fuel: int = FUEL,
        max_memory: int | None = None,
        preopen: Path | None = None,
    ) -> tuple[int, bytes, bytes]:
        """Run a guest's _start; return (exit code, stdout, stderr). Traps propagate."""
        paths = {k: tmp / f"{name}.{k}" for k in ("stdin", "stdout", "stderr")}
        paths["stdin"].write_bytes(stdin)
        wasi = wasmtime.WasiConfig()
        wasi.stdin_file = str(paths["stdin"])
        wasi.stdout_file = str(paths["stdout"])
        wasi.stderr_file = str(paths["stderr"])
        wasi.argv = [name, *argv]
        wasi.env = [list(kv) for kv in env]
        if preopen is not None:
            wasi.preopen_dir(str(preopen), ".")
        store = wasmtime.Store(self.engine)
        store.set_wasi(wasi)
        store.set_fuel(fuel)
        if max_memory is not None:
            store.set_limits(memory_size=max_memory)
        code = 0
        try:
            instance = self.linker.instantiate(store, self.module(name))
            instance.exports(store)["_start"](store)
        except wasmtime.ExitTrap as exc:
            code = exc.code
        return code, paths["stdout"].read_bytes(), paths["stderr"].read_bytes()


@pytest.fixture(scope="module")
def guests() -> Guests:
    return Guests()


def reverse_by_code_point(data: bytes) -> bytes:
    text = data.decode("utf-8", "surrogateescape")
    return text[::-1].encode("utf-8", "surrogateescape")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("Hello, World", "dlroW ,olleH"),
        ("añ€😀x", "x😀€ña"),
        ("Здравствуй, мир! 你好 🌍🚀\n", "\n🚀🌍 好你 !рим ,йувтсвардЗ"),
        ("", ""),
    ],
)
def test_hello_reverses_by_code_point(guests: Guests, tmp_path: Path, given, expected) -> None:
    code, out, err = guests.run(tmp_path, "hello", given.encode())
    assert (code, out.decode(), err) == (0, expected, b"")


def test_hello_treats_each_byte_of_malformed_utf8_on_its_own(guests: Guests, tmp_path) -> None:
    rng = random.Random(3)
    pieces = [
        b"\xe2\x82",
        b"A",
        b"\xed\xa0\x80",
        b"\xc0\xaf",
        b"\xf4\x90\x80\x80",
        b"\xff",
        "é".encode(),
        "😀".encode(),
        b"\xf0\x9f\x98",
        b"\x80",
    ]
    data = b"".join(rng.choice(pieces) for _ in range(2000)) + bytes(
        rng.randrange(256) for _ in range(4000)
    )
    code, out, _ = guests.run(tmp_path, "hello", data)
    assert code == 0
    assert out == reverse_by_code_point(data)


def test_hello_grows_memory_for_large_input(guests: Guests, tmp_path: Path) -> None:
    data = ("ab€😀\n" * 300_000).encode()  # 3.3 MB: well past the first 64 KiB buffer
    code, out, _ = guests.run(tmp_path, "hello", data)
    assert code == 0
    assert out == reverse_by_code_point(data)


def _pseudo_random_bytes(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


@pytest.mark.parametrize(
    "data",
    [b"", b"abc", b"a" * 55, b"a" * 56, b"b" * 64, b"c" * 119, _pseudo_random_bytes(1 << 20, 1)],
    ids=["empty", "abc", "55", "56", "64", "119", "1MiB"],
)
def test_sha256sum_matches_hashlib(guests: Guests, tmp_path: Path, data: bytes) -> None:
    code, out, err = guests.run(tmp_path, "sha256sum", data)
    assert (code, err) == (0, b"")
    assert out == f"{hashlib.sha256(data).hexdigest()}  -\n".encode()


def test_sha256sum_reads_files_from_a_preopened_dir(guests: Guests, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "a.txt").write_bytes(b"phase\n")
    code, out, err = guests.run(
        tmp_path, "sha256sum", argv=("a.txt", "missing.txt"), preopen=shared
    )
    assert code == 1
    assert out == hashlib.sha256(b"phase\n").hexdigest().encode() + b"  a.txt\n"
    assert err.startswith(b"sha256sum: missing.txt: ")


def _wc_reference(data: bytes) -> bytes:
    lines = data.count(b"\n")
    return f"{lines} {len(data.split())} {len(data)}\n".encode()


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello",
        b"one two\nthree\n",
        b"  \t\v\f\r\n lead and trail  \n\n",
        b"caf\xc3\xa9 na\xc3\xafve\x00nul\n",
        _pseudo_random_bytes(300_000, 2),
    ],
    ids=["empty", "word", "lines", "whitespace", "utf8", "random"],
)
def test_wc_matches_python_counts(guests: Guests, tmp_path: Path, data: bytes) -> None:
    code, out, err = guests.run(tmp_path, "wc", data)
    assert (code, err) == (0, b"")
    assert out == _wc_reference(data)


def test_wc_selects_counts_and_rejects_bad_options(guests: Guests, tmp_path: Path) -> None:
    assert guests.run(tmp_path, "wc", b"a b\nc\n", argv=("-l",))[:2] == (0, b"2\n")
    assert guests.run(tmp_path, "wc", b"a b\nc\n", argv=("-wc",))[:2] == (0, b"3 6\n")
    code, _, err = guests.run(tmp_path, "wc", b"", argv=("-x",))
    assert code == 2
    assert b"unknown option -x" in err


def test_printenv_prints_only_what_the_host_passed(guests: Guests, tmp_path: Path) -> None:
    env = (("LANG", "C"), ("GREETING", "héllo wörld"))
    assert guests.run(tmp_path, "printenv", env=env)[:2] == (
        0,
        "LANG=C\nGREETING=héllo wörld\n".encode(),
    )
    assert guests.run(tmp_path, "printenv", argv=("GREETING",), env=env)[:2] == (
        0,
        "héllo wörld\n".encode(),
    )
    assert guests.run(tmp_path, "printenv", argv=("HOME", "LANG"), env=env)[:2] == (1, b"C\n")


def test_tee_copies_stdin_to_stdout_and_files(guests: Guests, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    data = _pseudo_random_bytes(200_000, 4)
    code, out, err = guests.run(tmp_path, "tee", data, argv=("copy.bin",), preopen=shared)
    assert (code, err) == (0, b"")
    assert out == data
    assert (shared / "copy.bin").read_bytes() == data


@pytest.mark.parametrize("status", [0, 1, 42, 125])
def test_exit_passes_argv1_to_proc_exit(guests: Guests, tmp_path: Path, status: int) -> None:
    assert guests.run(tmp_path, "exit", argv=(str(status),)) == (status, b"", b"")


def test_uuidgen_and_date_print_well_formed_lines(guests: Guests, tmp_path: Path) -> None:
    code, out, _ = guests.run(tmp_path, "uuidgen")
    assert code == 0
    assert re.fullmatch(
        rb"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\n", out
    )
    code, out, _ = guests.run(tmp_path, "date")
    assert code == 0
    assert re.fullmatch(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z\nmonotonic_ns=\d+\n", out)


def test_big_runs_and_prints_its_checksum(guests: Guests, tmp_path: Path) -> None:
    assert 1_000_000 <= (BUILT / "big.wasm").stat().st_size <= 2_000_000
    code, out, _ = guests.run(tmp_path, "big")
    assert code == 0
    assert re.fullmatch(rb"big: [0-9a-f]{8}\n", out)


# --- the misbehaving guests misbehave as documented -----------------------------------------


def _trap_message(guests: Guests, tmp_path: Path, name: str, **kw) -> str:
    with pytest.raises(wasmtime.Trap) as info:
        guests.run(tmp_path, name, **kw)
    return str(info.value)


def test_spin_and_stdin_block_run_until_fuel_runs_out(guests: Guests, tmp_path: Path) -> None:
    assert "all fuel consumed" in _trap_message(guests, tmp_path, "spin", fuel=100_000)
    # At end of input it keeps reading rather than exiting.
    assert "all fuel consumed" in _trap_message(
        guests, tmp_path, "stdin_block", stdin=b"x", fuel=100_000
    )


def test_flood_writes_yes_lines_until_stopped(guests: Guests, tmp_path: Path) -> None:
    with pytest.raises(wasmtime.Trap, match="all fuel consumed"):
        guests.run(tmp_path, "flood", fuel=70_000)  # ~66k fuel to fill its 64 KiB buffer
    out = (tmp_path / "flood.stdout").read_bytes()
    assert len(out) >= 10 * 65536
    assert out == b"y\n" * (len(out) // 2)


def test_trap_recurse_and_membomb_trap(guests: Guests, tmp_path: Path) -> None:
    assert "unreachable" in _trap_message(guests, tmp_path, "trap")
    assert "call stack exhausted" in _trap_message(guests, tmp_path, "recurse")
    message = _trap_message(guests, tmp_path, "membomb", max_memory=8 << 20)
    assert "unreachable" in message


def test_bigmem_needs_256_mib_at_instantiation(guests: Guests, tmp_path: Path) -> None:
    with pytest.raises(wasmtime.WasmtimeError, match="4096 pages"):
        guests.run(tmp_path, "bigmem", max_memory=64 << 20)
    assert guests.run(tmp_path, "bigmem", max_memory=256 << 20) == (0, b"", b"")


def test_bad_modules_lack_what_a_runner_needs(guests: Guests) -> None:
    def exports(name: str) -> set[str]:
        return {e.name for e in guests.module(name).exports}

    def imports(name: str) -> set[tuple[str, str | None]]:
        return {(i.module, i.name) for i in guests.module(name).imports}

    assert exports("noexport") == {"memory", "main"}
    assert exports("nomemory") == {"_start"}
    assert imports("badimport") == {("env", "host_secret")}
    for name in ("hello", "sha256sum", "wc", "spin", "flood", "big"):
        assert {"memory", "_start"} <= exports(name)
        assert {m for m, _ in imports(name)} <= {"wasi_snapshot_preview1"}
