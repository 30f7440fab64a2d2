"""Build plasm-exec's example WASM guests from src/ (the one documented command).

    .venv/bin/python packages/plasm-exec/examples/build.py            # into examples/build/
    .venv/bin/python packages/plasm-exec/examples/build.py --check    # rebuild, compare
    .venv/bin/python packages/plasm-exec/examples/build.py --out DIR [NAME...]

C guests (src/*.c) are compiled by Debian's clang for wasm32-wasi against wasi-libc;
WAT guests (src/*.wat) and the generated big.wat (src/gen_big.py) are assembled with
wasmtime's wat2wasm. The output is byte-for-byte reproducible for a given toolchain:
fixed flags, relative source paths, no debug info, every custom section stripped.
Besides the modules, the output directory gets SHA256SUMS (sha256sum format, sorted).

Exit status: 0 built (or --check matched), 1 --check found a difference,
2 bad arguments, 3 the C toolchain is missing (message says what to install).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import importlib.util
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE / "src"
BUILD = HERE / "build"

CLANG = "clang"
CFLAGS = (
    "--target=wasm32-wasi",
    "-O2",
    "-std=gnu17",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-Wl,--strip-all",
)
APT_PACKAGES = ("clang", "lld", "wasi-libc", "libclang-rt-dev-wasm32")

C_GUESTS = ("hello", "sha256sum", "wc", "printenv", "tee", "uuidgen", "date", "exit")
WAT_GUESTS = (
    "spin",
    "membomb",
    "flood",
    "recurse",
    "stdin_block",
    "trap",
    "bigmem",
    "noexport",
    "nomemory",
    "badimport",
)
GENERATED = ("big",)
ALL = C_GUESTS + WAT_GUESTS + GENERATED


class ToolchainMissing(Exception):
    """The clang wasm32-wasi toolchain is not installed or cannot link a program."""


@functools.cache
def toolchain_problem() -> str | None:
    """Return why C guests cannot be built here, or None when they can."""
    if shutil.which(CLANG) is None:
        return f"{CLANG} not found on PATH"
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe.c"
        probe.write_text("int main(void) { return 0; }\n")
        proc = subprocess.run(
            [CLANG, *CFLAGS, "-o", str(Path(tmp) / "probe.wasm"), "probe.c"],
            cwd=tmp,
            capture_output=True,
            text=True,
            check=False,
        )
    if proc.returncode != 0:
        return f"{CLANG} cannot link for wasm32-wasi: {proc.stderr.strip()[-500:]}"
    return None


def build_c(name: str) -> bytes:
    if problem := toolchain_problem():
        raise ToolchainMissing(problem)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / f"{name}.wasm"
        # Run in src/ with a relative file name so no absolute path can reach the output.
        proc = subprocess.run(
            [CLANG, *CFLAGS, "-o", str(out), f"{name}.c"],
            cwd=SRC,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"clang failed on src/{name}.c:\n{proc.stderr}")
        return out.read_bytes()


def build_wat(name: str) -> bytes:
    import wasmtime

    return bytes(wasmtime.wat2wasm((SRC / f"{name}.wat").read_text()))


def build_big(name: str) -> bytes:
    import wasmtime

    spec = importlib.util.spec_from_file_location("gen_big", SRC / "gen_big.py")
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    return bytes(wasmtime.wat2wasm(gen.big_wat()))


def builder(name: str) -> Callable[[str], bytes]:
    if name in C_GUESTS:
        return build_c
    if name in WAT_GUESTS:
        return build_wat
    return build_big


def build(names: tuple[str, ...]) -> dict[str, bytes]:
    """Build the named guests; return {"<name>.wasm": module bytes}."""
    if any(n in C_GUESTS for n in names):
        toolchain_problem()  # once, before the threads start
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda n: builder(n)(n), names))
    return {f"{n}.wasm": data for n, data in zip(names, results, strict=True)}


def sha256sums(files: dict[str, bytes]) -> bytes:
    lines = (f"{hashlib.sha256(data).hexdigest()}  {name}\n" for name, data in files.items())
    return "".join(sorted(lines, key=lambda line: line[66:])).encode()


def check(built: dict[str, bytes], against: Path) -> list[str]:
    """Compare freshly built files with a build directory; return the differences."""
    problems = []
    for name, data in sorted(built.items()):
        path = against / name
        if not path.exists():
            problems.append(f"{name}: missing from {against}")
        elif path.read_bytes() != data:
            problems.append(f"{name}: differs from the rebuilt module")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Build plasm-exec's example WASM guests from examples/src/.",
    )
    parser.add_argument("--out", type=Path, default=BUILD, help="output directory")
    parser.add_argument(
        "--check",
        action="store_true",
        help="rebuild in memory and compare with examples/build/ instead of writing",
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"guests: {' '.join(ALL)}")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in ALL]
    if unknown:
        parser.error(f"unknown guest(s): {' '.join(unknown)}")
    names = tuple(args.names) or ALL

    try:
        built = build(names)
    except ToolchainMissing as exc:
        print(
            f"build.py: cannot build the C guests: {exc}\n"
            f"Install the toolchain: apt-get install {' '.join(APT_PACKAGES)}",
            file=sys.stderr,
        )
        return 3
    if names == ALL:
        built["SHA256SUMS"] = sha256sums(built)

    if args.check:
        problems = check(built, BUILD)
        for line in problems:
            print(f"build.py: {line}", file=sys.stderr)
        if problems:
            print("build.py: run build.py without --check and commit build/", file=sys.stderr)
            return 1
        print(f"build.py: {len(built)} files match {BUILD}", file=sys.stderr)
        return 0

    args.out.mkdir(parents=True, exist_ok=True)
    for name, data in built.items():
        (args.out / name).write_bytes(data)
    print(f"build.py: wrote {len(built)} files to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
