"""plasm-exec: run a WASM (WASI preview1) module under four fences and sign a receipt.

The library API (used by plasmd) lives in ``plasm_exec.api``; importing this
package does not import wasmtime.
"""

__version__ = "0.1.0"
