"""Receipts: what ran, on what, with what result (signed by the worker).

A receipt binds the job (its id), the module, the exact stdin, stdout and
stderr (by content id), how the run ended and the limits in force.
``check_binding`` checks that a (verified) receipt is for a given job, worker
and output bytes: ``plasmd submit``, ``plasm-exec verify`` and
``phase-verify --reexec`` all use it.
"""

from __future__ import annotations

from typing import Any

from phase_core import schema as s
from phase_core.canonical import content_id
from phase_core.errors import DigestMismatch
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


EMPTY_ID = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


class BindingMismatch(DigestMismatch):
    """The receipt is genuine but not for this job, worker or these bytes (exit 1).

    ``details["field"]`` names the first receipt field that does not match.
    """

    slug = "receipt_mismatch"


def check_binding(body: dict[str, Any], *, job_id: str, manifest_body: dict[str, Any],
                  worker: str | None = None, stdout: bytes | None = None,
                  stderr: bytes | None = None) -> None:
    """Check that a verified receipt ``body`` is for the job ``job_id`` (whose manifest
    body is ``manifest_body``): the same job id, module, stdin (the empty stream's id
    when the manifest names none) and deterministic profile; run by ``worker`` when
    given; and, when given, that ``stdout``/``stderr`` are the bytes it names (id and
    size). Raises ``BindingMismatch`` with slug ``wrong_<field>`` for the first
    field that differs."""
    want: list[tuple[str, object]] = [
        ("worker", worker), ("job", job_id), ("module", manifest_body["module"]),
        ("stdin", manifest_body["stdin"] or EMPTY_ID),
        ("deterministic", bool(manifest_body.get("deterministic", False)))]
    for name, data in (("stdout", stdout), ("stderr", stderr)):
        if data is not None:
            want += [(name, content_id(data)), (f"{name}_bytes", len(data))]
    for field, expected in want:
        if expected is None:
            continue
        if body[field] != expected:
            what = field.removesuffix("_bytes")
            raise BindingMismatch(
                f"the receipt's {field} is {str(body[field])[:80]}, expected "
                f"{str(expected)[:80]}", slug=f"wrong_{what}", field=field,
                hint=_HINTS.get(what, "the receipt is not for this job"))


_HINTS = {
    "worker": "the receipt was signed by another node than the one that ran the job",
    "job": "the receipt is for another job (an old receipt passed off for a new job?)",
    "stdout": "the output bytes are not the ones the receipt names",
    "stderr": "the output bytes are not the ones the receipt names",
}
