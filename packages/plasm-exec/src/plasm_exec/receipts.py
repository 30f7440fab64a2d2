"""Receipt bodies and the locally made job manifest of ``plasm-exec run``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from phase_core import manifest, receipt, signing
from phase_core.timefmt import format_time

if TYPE_CHECKING:
    from phase_core.identity import Identity
    from plasm_exec.api import RunResult


def receipt_body(*, job_id: str, module_id: str, result: RunResult, limits: dict[str, int],
                 deterministic: bool, runtime: dict[str, str], worker: str,
                 completed: int) -> dict[str, Any]:
    o = result.outcome
    body = {
        "job": job_id,
        "module": module_id,
        "stdin": result.stdin_id,
        "stdout": result.stdout_id,
        "stderr": result.stderr_id,
        "stdout_bytes": result.stdout_bytes,
        "stderr_bytes": result.stderr_bytes,
        "exit_code": o.exit_code,
        "ended": o.ended,
        "trap": o.trap,
        "fuel_consumed": o.fuel_consumed,
        "fuel_exact": o.fuel_exact,
        "wall_ms": o.wall_ms,
        "limits": dict(limits),
        "runtime": dict(runtime),
        "deterministic": deterministic,
        "worker": worker,
        "completed": format_time(completed),
    }
    return receipt.check(body)


def sign_receipt(body: dict[str, Any], identity: Identity) -> dict[str, Any]:
    return signing.sign(receipt.TYPE, body, [identity])


def local_manifest(*, module_id: str, stdin_id: str, argv: list[str], env: dict[str, str],
                   limits: dict[str, int], deterministic: bool, created: int,
                   identity: Identity) -> dict[str, Any]:
    """The job manifest a ``run`` would have been given, signed by the node itself."""
    body = manifest.build(module=module_id, stdin=stdin_id, now=created, argv=argv, env=env,
                          limits=limits, deterministic=deterministic,
                          requirements={"runtime": "wasmtime"})
    return signing.sign(manifest.TYPE, body, [identity])


def manifest_path_for(receipt_path: Path) -> Path:
    """``r.json`` → ``r.manifest.json`` (where ``run --receipt`` stores its job manifest)."""
    p = Path(receipt_path)
    stem = p.name[:-5] if p.name.endswith(".json") else p.name
    return p.with_name(f"{stem}.manifest.json")
