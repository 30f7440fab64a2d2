"""Job manifests: what to run, on what input, under which limits (signed by the submitter)."""

from __future__ import annotations

import os
from typing import Any

from phase_core import schema as s
from phase_core.limits import DEFAULT_LIMITS, LIMITS
from phase_core.timefmt import format_time

TYPE = "job_manifest"
ROLE = "job-submitter"
DEFAULT_LIFETIME_S = 3600

REQUIREMENTS = s.obj({}, {
    "arch": s.string(32, r"[a-z0-9_]+"),
    "runtime": s.string(32, r"[a-z0-9_.-]+"),
    "cpu_cores": s.integer(1, 4096),
    "memory_bytes": s.integer(0),
    "features": s.array(s.string(64, r"[a-z0-9_.-]+"), 32, unique=True),
})

BODY = s.obj({
    "module": s.content_id,
    "stdin": s.nullable(s.content_id),
    "argv": s.array(s.c_string(4096), 256),
    "env": s.str_map(s.string(256, r"[A-Za-z_][A-Za-z0-9_]*"), s.c_string(4096), 256),
    "limits": LIMITS,
    "requirements": REQUIREMENTS,
    "nonce": s.string(64, r"[0-9a-f]{32,64}"),
    "created": s.time_str,
    "expires": s.time_str,
}, {
    "deterministic": s.boolean,
    "name": s.string(128),
})


def build(*, module: str, stdin: str | None, now: int, argv: list[str] | None = None,
          env: dict[str, str] | None = None, limits: dict[str, int] | None = None,
          requirements: dict[str, Any] | None = None, deterministic: bool = False,
          lifetime_s: int = DEFAULT_LIFETIME_S, nonce: str | None = None,
          name: str | None = None) -> dict[str, Any]:
    """A checked job-manifest body. ``now`` is injected (Unix seconds)."""
    body: dict[str, Any] = {
        "module": module,
        "stdin": stdin,
        "argv": list(argv or ["main.wasm"]),
        "env": dict(env or {}),
        "limits": dict(limits or DEFAULT_LIMITS),
        "requirements": dict(requirements or {}),
        "nonce": nonce or os.urandom(16).hex(),  # as secrets.token_hex(16)
        "created": format_time(now),
        "expires": format_time(now + lifetime_s),
    }
    if deterministic:
        body["deterministic"] = True
    if name is not None:
        body["name"] = name
    BODY(body, "job_manifest")
    return body
