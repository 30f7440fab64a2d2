"""The job exchange and the small node requests, as message checkers (sans-I/O).

One stream per request. The first control frame names the request:

    offer  → accept | reject          then, after accept:
    run    → result (+ 2 blob frames: stdout, stderr) | reject | error
    batch  → per job: result (+ 2 blobs) | reject | error  (``jobs_batch``)
    get    → blob (+ 1 blob frame) | not_found
    ping   → pong
    get_node_record → node_record

While a job runs, the worker opens streams back to the submitter and sends
``get`` for the module and stdin blobs it lacks; the submitter answers only for
the blobs of jobs it offered to that worker.

This module holds the message schemas, ``check(msg, *expected)`` (a message of
the wrong type or malformed is a protocol violation) and ``Machine``, the base
of the two sans-I/O state machines that decide the order of the exchange:
``jobs_worker.Responder`` (the side that answers a stream) and
``jobs_client`` (``Submission``, ``BlobRequest``, ``Query``: the side that
opens one). The async code only moves messages between a stream and a machine.

Protocol-violation slugs the machines raise: ``unexpected_message`` (a message
out of order, a duplicate, or an unknown request), ``bad_message`` (malformed),
``truncated`` (the stream ended early or a blob was short), ``job_mismatch``
(an answer names another job), ``wrong_blob`` (a ``blob``/``not_found`` for
another id or offset), ``nonce_mismatch``, ``frame_too_large`` (a blob over
the cap the machine set).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from phase_core import schema as s
from phase_core.errors import InternalError, PhaseError, ProtocolViolation, Timeout
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
                    "message": s.string(MAX_MESSAGE)},
                   {"job": s.content_id}),  # (names the job only on a batch stream)
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


# -- the common base of the state machines ---------------------------------------------

@dataclass(frozen=True, slots=True)
class SendBlob:
    """An outgoing blob frame (the bytes follow the control frame before it)."""

    data: bytes


Out = dict[str, Any] | SendBlob
Clock = Callable[[], float]  # monotonic seconds


class Machine:
    """Outbox, terminal states and poisoning shared by every job-exchange machine.

    ``outbox()`` drains what to send, in order. The first error caused by the
    peer poisons the machine: later calls raise it again. ``deadline`` (a value of the injected
    clock, or None) is what the adapter enforces; when it passes, the adapter
    calls ``deadline_passed()``.
    """

    DONE = "done"
    FAILED = "failed"

    def __init__(self, now: Clock, state: str) -> None:
        self.now = now
        self.state = state
        self.deadline: float | None = None
        self._out: list[Out] = []
        self._error: PhaseError | None = None

    def outbox(self) -> list[Out]:
        out, self._out = self._out, []
        return out

    @property
    def finished(self) -> bool:
        return self.state in (self.DONE, self.FAILED)

    def time_left(self) -> float | None:
        """Seconds until the deadline (never negative), or None without one."""
        return None if self.deadline is None else max(0.0, self.deadline - self.now())

    def deadline_passed(self, what: str, **details: Any) -> NoReturn:
        """Raise the ``Timeout`` to report. The machine is not poisoned: a worker may
        still answer ``error`` (see ``Responder.error``)."""
        self._raise_if_failed()
        raise Timeout(what, **details)

    def _send(self, *items: Out) -> None:
        self._out.extend(items)

    def _expect(self, msg: dict[str, Any] | None, *expected: str) -> dict[str, Any]:
        try:
            return check(msg, *expected)
        except PhaseError as e:
            self._fail(e)

    def _violation(self, message: str, slug: str = "unexpected_message") -> NoReturn:
        self._fail(ProtocolViolation(message, slug=slug))

    def _need(self, *states: str) -> None:
        """The adapter called a method in the wrong state: a bug, not the peer's fault."""
        self._raise_if_failed()
        if self.state not in states:
            raise InternalError(f"{type(self).__name__}: not allowed in state {self.state}")

    def _fail(self, err: PhaseError) -> NoReturn:
        self._error = err
        self.state = self.FAILED
        self._out.clear()
        raise err

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error
