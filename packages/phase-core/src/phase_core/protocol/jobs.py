"""The job exchange and the small node requests, as message checkers (sans-I/O).

One stream per request. The first control frame names the request:

    offer  → accept | reject          then, after accept:
    run    → result (+ 2 blob frames: stdout, stderr) | reject | error
    get    → blob (+ 1 blob frame) | not_found
    ping   → pong
    get_node_record → node_record

While a job runs, the worker opens streams back to the submitter and sends
``get`` for the module and stdin blobs it lacks; the submitter answers only for
the blobs of jobs it offered to that worker.

Each side reads with ``check(msg, *expected)``, which refuses a message out of
order or malformed as a protocol violation. Pure: dicts in, checked dicts out.
"""

from __future__ import annotations

from typing import Any

from phase_core import schema as s
from phase_core.errors import ProtocolViolation
from phase_core.limits import LIMITS
from phase_core.manifest import REQUIREMENTS

REJECT_REASONS = (
    "not_authorized",     # the submitter is not allowed by the worker's keyring
    "queue_full",         # every worker and queue slot is taken; retry later or elsewhere
    "arch_mismatch", "runtime_not_supported", "insufficient_resources",
    "feature_not_supported",
    "invalid_request",    # the run does not match the offer, or the manifest is bad
    "replay",             # this job id was accepted before
    "expired",            # the manifest is outside its validity window
    "too_large",          # module or stdin over the worker's caps
    "shutting_down",      # the worker is draining
)

MAX_MESSAGE = 256
ENVELOPE = s.obj({"v": s.integer(1, 1), "type": s.string(32),
                  "body": s.obj({}, open_ended=True),
                  "signatures": s.array(s.obj({"key": s.node_id,
                                                "sig": s.string(128, r"[0-9a-f]{128}")}),
                                        16, min_items=1)})

MESSAGES: dict[str, s.Check] = {
    "offer": s.obj({"type": s.string(32), "job": s.content_id, "module": s.content_id,
                    "module_bytes": s.integer(1), "stdin": s.nullable(s.content_id),
                    "stdin_bytes": s.integer(0), "requirements": REQUIREMENTS,
                    "limits": LIMITS}),
    "accept": s.obj({"type": s.string(32), "job": s.content_id}),
    "reject": s.obj({"type": s.string(32), "job": s.nullable(s.content_id),
                     "reason": s.one_of(*REJECT_REASONS), "message": s.string(MAX_MESSAGE)}),
    "run": s.obj({"type": s.string(32), "manifest": ENVELOPE}),
    "result": s.obj({"type": s.string(32), "job": s.content_id, "receipt": ENVELOPE}),
    "error": s.obj({"type": s.string(32), "error": s.string(64, r"[a-z_]+"),
                    "message": s.string(MAX_MESSAGE)}),
    "get": s.obj({"type": s.string(32), "id": s.content_id}, {"offset": s.integer(0)}),
    "blob": s.obj({"type": s.string(32), "id": s.content_id, "size": s.integer(0)},
                  {"offset": s.integer(0)}),
    "not_found": s.obj({"type": s.string(32), "id": s.content_id}),
    "ping": s.obj({"type": s.string(32), "nonce": s.string(64)}),
    "pong": s.obj({"type": s.string(32), "nonce": s.string(64)}),
    "get_node_record": s.obj({"type": s.string(32)}),
    "node_record": s.obj({"type": s.string(32), "record": ENVELOPE}),
}


def check(msg: dict[str, Any] | None, *expected: str) -> dict[str, Any]:
    """Return ``msg`` if it is one of the ``expected`` types and well formed.

    Anything else is the peer breaking the protocol.
    """
    if msg is None:
        raise ProtocolViolation(f"stream ended; expected {' or '.join(expected)}",
                                slug="truncated")
    t = msg.get("type")
    if t not in expected:
        raise ProtocolViolation(f"got {str(t)[:32]!r}; expected {' or '.join(expected)}",
                                slug="unexpected_message")
    try:
        MESSAGES[str(t)](msg, str(t))
    except ProtocolViolation:
        raise
    except Exception as e:  # Malformed from the schema checker
        raise ProtocolViolation(f"bad {t} message: {e}", slug="bad_message") from None
    return msg


def reject(job: str | None, reason: str, message: str = "") -> dict[str, Any]:
    assert reason in REJECT_REASONS, reason
    return {"type": "reject", "job": job, "reason": reason, "message": message[:MAX_MESSAGE]}


def error(slug: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": slug, "message": message[:MAX_MESSAGE]}


def offer_for(manifest_env: dict[str, Any], job_id: str, module_bytes: int,
              stdin_bytes: int) -> dict[str, Any]:
    body = manifest_env["body"]
    return {"type": "offer", "job": job_id, "module": body["module"],
            "module_bytes": module_bytes, "stdin": body["stdin"], "stdin_bytes": stdin_bytes,
            "requirements": body["requirements"], "limits": body["limits"]}


def matches_offer(offer: dict[str, Any], manifest_body: dict[str, Any], job_id: str) -> str | None:
    """Why a verified manifest does not match what was offered (None if it does)."""
    if job_id != offer["job"]:
        return "the manifest is not the job that was offered"
    for k in ("module", "stdin", "requirements", "limits"):
        if manifest_body[k] != offer[k]:
            return f"the manifest's {k} differs from the offer"
    return None
