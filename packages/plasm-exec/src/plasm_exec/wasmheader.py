"""A module's first bytes checked without wasmtime: a WASM core module, version 1,
under the size cap. ``engine`` checks it before compiling; a client checks it before
it signs a job for the module or sends it anywhere (``plasmd.submit.make_manifest``),
so a wrong file is a clear local error, not a remote worker's failure."""

from __future__ import annotations

from phase_core.errors import Malformed, TooLarge

MAX_MODULE_BYTES = 64 << 20


def check_header(wasm: bytes) -> None:
    if len(wasm) > MAX_MODULE_BYTES:
        raise TooLarge(f"module is {len(wasm)} bytes, over the cap of {MAX_MODULE_BYTES}")
    if len(wasm) < 8 or wasm[:4] != b"\0asm":
        raise Malformed("not a WASM module (no \\0asm header)", slug="bad_module",
                        hint="pass a compiled .wasm file, not WAT text or a native binary")
    if wasm[4:8] != b"\x01\0\0\0":
        raise Malformed("not a WASM core module version 1 (a component, or a newer format?)",
                        slug="bad_module", hint="plasm-exec runs WASI preview1 core modules")
