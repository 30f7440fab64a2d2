"""Receipts: what ran, on what, with what result (signed by the worker).

A receipt binds the job (its id), the module, the exact stdin, stdout and
stderr (by content id), how the run ended and the limits in force.
"""

from __future__ import annotations

from typing import Any

from phase_core import schema as s
from phase_core.limits import LIMITS

TYPE = "receipt"
ROLE = "worker"
ENDED = ("exited", "trapped", "out_of_fuel", "timeout", "memory_limit", "output_limit")

BODY = s.obj({
    "job": s.content_id,
    "module": s.content_id,
    "stdin": s.content_id,
    "stdout": s.content_id,
    "stderr": s.content_id,
    "stdout_bytes": s.integer(0),
    "stderr_bytes": s.integer(0),
    "exit_code": s.nullable(s.integer(0, 255)),
    "ended": s.one_of(*ENDED),
    "trap": s.nullable(s.string(64, r"[a-z0-9_]+")),
    "fuel_consumed": s.integer(0),
    "fuel_exact": s.boolean,
    "wall_ms": s.integer(0),
    "limits": LIMITS,
    "runtime": s.obj({"name": s.string(32, r"[a-z0-9_.-]+"),
                      "version": s.string(64, r"[A-Za-z0-9_.+-]+")}),
    "deterministic": s.boolean,
    "worker": s.node_id,
    "completed": s.time_str,
})


def check(body: dict[str, Any]) -> dict[str, Any]:
    BODY(body, "receipt")
    if body["ended"] == "exited" and body["exit_code"] is None:
        raise s.fail("receipt.exit_code", "an exited run has an exit code")
    if body["ended"] == "trapped" and body["trap"] is None:
        raise s.fail("receipt.trap", "a trapped run names its trap")
    return body
