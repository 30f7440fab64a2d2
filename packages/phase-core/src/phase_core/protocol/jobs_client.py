"""The asking side of a node stream, as state machines (sans-I/O).

``Submission`` is the submitter's job stream; ``BlobRequest`` a ``get``;
``Query`` a ``ping`` or ``get_node_record``. Each takes the peer's messages
(``receive``; ``None`` for the end of the stream) and blob frames
(``receive_blob``, at most ``expect_blob`` bytes), returns events, and puts
what to send in ``outbox()``. No I/O; the clock is injected and the job's
overall deadline is a value the adapter enforces.

Submission states::

    start() → answer ─accept→ accepted ─result→ stdout ─blob→ stderr ─blob→ done
                 └─reject→ done   ├─reject/error→ done
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from phase_core.errors import DigestMismatch, Unavailable
from phase_core.protocol import jobs
from phase_core.protocol.framing import FrameTooLarge
from phase_core.protocol.jobs import Clock, Machine

# Rejections a submitter can retry elsewhere or later (exit 75) vs. final ones (exit 1).
RETRYABLE = frozenset({"queue_full", "shutting_down"})
QUERY_ANSWERS = MappingProxyType({"ping": "pong", "get_node_record": "node_record"})
NEW, ANSWER, ACCEPTED, STDOUT, STDERR, BLOB, SENT = (
    "new", "await_answer", "accepted", "await_stdout", "await_stderr", "await_blob", "sent")


@dataclass(frozen=True, slots=True)
class Accepted:
    job: str


@dataclass(frozen=True, slots=True)
class Refused:
    reason: str
    message: str
    stage: str  # "offer" or "run"

    @property
    def retryable(self) -> bool:
        return self.reason in RETRYABLE


@dataclass(frozen=True, slots=True)
class Failed:
    error: str
    message: str


@dataclass(frozen=True, slots=True)
class Finished:
    receipt: dict[str, Any]
    stdout: bytes
    stderr: bytes


class Submission(Machine):
    """One job, offered and run on one stream; ``may_serve`` says which of the
    worker's ``get`` requests (on other streams) the submitter answers."""

    def __init__(self, now: Clock, manifest_env: dict[str, Any], job_id: str,
                 blob_sizes: dict[str, int], *, timeout_s: float) -> None:
        super().__init__(now, NEW)
        body = manifest_env["body"]
        self.manifest = manifest_env
        self.job = job_id
        self.blobs = frozenset(c for c in (body["module"], body["stdin"]) if c is not None)
        self.sizes = blob_sizes
        self.output_limit = int(body["limits"]["output_bytes"])
        self.timeout_s = timeout_s
        self._receipt: dict[str, Any] | None = None
        self._stdout = b""

    def start(self) -> None:
        """Queue the offer and, pipelined, the run (a worker that rejects the offer
        never reads it; this saves a round trip per job)."""
        self._need(NEW)
        body = self.manifest["body"]
        stdin_bytes = self.sizes.get(body["stdin"], 0) if body["stdin"] else 0
        self._send(jobs.offer_for(self.manifest, self.job, self.sizes[body["module"]],
                                  stdin_bytes),
                   {"type": "run", "manifest": self.manifest})
        self.state, self.deadline = ANSWER, self.now() + self.timeout_s

    @property
    def expect_blob(self) -> int | None:
        """The cap of the blob frame due next, or None when a control frame is due."""
        return self.output_limit if self.state in (STDOUT, STDERR) else None

    def may_serve(self, cid: str) -> bool:
        return cid in self.blobs and self.state in (ANSWER, ACCEPTED)

    def receive(self, msg: dict[str, Any] | None) -> Accepted | Refused | Failed | None:
        self._raise_if_failed()
        st = self.state
        if st == ANSWER:
            m = self._expect(msg, "accept", "reject")
            self._same_job(m)
            if m["type"] == "accept":
                self.state = ACCEPTED
                return Accepted(self.job)
            self.state = self.DONE
            return Refused(m["reason"], m["message"], "offer")
        if st == ACCEPTED:
            m = self._expect(msg, "result", "reject", "error")
            if m["type"] == "error":
                self.state = self.DONE
                return Failed(m["error"], m["message"])
            self._same_job(m)
            if m["type"] == "reject":
                self.state = self.DONE
                return Refused(m["reason"], m["message"], "run")
            self._receipt, self.state = m["receipt"], STDOUT
            return None
        if st in (STDOUT, STDERR):
            self._violation("expected the " + ("stdout" if st == STDOUT else "stderr")
                            + " blob" + (", the stream ended" if msg is None else ""),
                            "truncated" if msg is None else "unexpected_message")
        if st == self.DONE and msg is None:
            return None
        self._need(self.DONE)
        assert msg is not None
        self._violation(f"{str(msg.get('type'))[:32]!r} after the exchange ended")

    def receive_blob(self, data: bytes) -> Finished | None:
        self._raise_if_failed()
        if self.state not in (STDOUT, STDERR):
            self._violation(f"a blob frame in state {self.state}")
        if len(data) > self.output_limit:
            self._fail(FrameTooLarge(f"an output blob of {len(data)} bytes is over the job's "
                                     f"output_bytes of {self.output_limit}"))
        if self.state == STDOUT:
            self._stdout, self.state = data, STDERR
            return None
        self.state = self.DONE
        assert self._receipt is not None
        return Finished(self._receipt, self._stdout, data)

    def _same_job(self, m: dict[str, Any]) -> None:
        if m["job"] is not None and m["job"] != self.job:
            self._violation(f"the worker answered for job {m['job']}, we offered {self.job}",
                            "job_mismatch")


class BlobRequest(Machine):
    """``get`` one blob from ``offset``: the answer must be for this id and offset,
    of the expected size (when known) and within ``max_bytes`` in all."""

    def __init__(self, now: Clock, cid: str, *, offset: int = 0, size: int | None = None,
                 max_bytes: int) -> None:
        super().__init__(now, NEW)
        self.id, self.offset, self.size, self.max_bytes = cid, offset, size, max_bytes
        self.announced = 0
        self.received = 0

    def start(self) -> None:
        self._need(NEW)
        req: dict[str, Any] = {"type": "get", "id": self.id}
        if self.offset:
            req["offset"] = self.offset
        self._send(req)
        self.state = ANSWER

    @property
    def expect_blob(self) -> int | None:
        return self.announced if self.state == BLOB else None

    def receive(self, msg: dict[str, Any] | None) -> int:
        """The answer: returns the blob's announced size (the bytes come next).
        ``not_found`` raises ``Unavailable``; a wrong size ``DigestMismatch``."""
        self._need(ANSWER)
        m = self._expect(msg, "blob", "not_found")
        if m["id"] != self.id or (m["type"] == "blob" and int(m.get("offset", 0)) != self.offset):
            self._violation(f"asked for {self.id} at {self.offset}, the peer answered for "
                            f"{m['id']} at {m.get('offset', 0)}", "wrong_blob")
        if m["type"] == "not_found":
            self._fail(Unavailable(f"the peer does not have {self.id}", slug="not_found"))
        size = int(m["size"])
        if self.size is not None and size != self.size - self.offset:
            self._fail(DigestMismatch(f"the peer offers {size} bytes of {self.id} from "
                                      f"{self.offset}; the blob is {self.size} bytes",
                                      slug="size_mismatch"))
        if self.offset + size > self.max_bytes:
            self._fail(DigestMismatch(f"the peer offers {self.offset + size} bytes for "
                                      f"{self.id}, over the cap of {self.max_bytes}",
                                      slug="too_large"))
        self.announced, self.state = size, BLOB
        return size

    def receive_chunk(self, n: int) -> None:
        """``n`` more bytes of the blob frame arrived."""
        self._need(BLOB)
        self.received += n
        if self.received > self.announced:
            self._violation(f"the peer sent more than the {self.announced} bytes it announced",
                            "bad_message")

    def receive_blob_end(self) -> None:
        self._need(BLOB)
        if self.received != self.announced:
            self._violation(f"the peer announced {self.announced} bytes and sent "
                            f"{self.received}", "truncated")
        self.state = self.DONE


class Query(Machine):
    """``ping`` (the ``pong`` must echo the nonce) or ``get_node_record``."""

    def __init__(self, now: Clock, request: dict[str, Any]) -> None:
        super().__init__(now, NEW)
        self.request = jobs.check(request, *QUERY_ANSWERS)

    def start(self) -> None:
        self._need(NEW)
        self._send(self.request)
        self.state = ANSWER

    def receive(self, msg: dict[str, Any] | None) -> dict[str, Any]:
        self._need(ANSWER)
        m = self._expect(msg, QUERY_ANSWERS[self.request["type"]])
        if m["type"] == "pong" and m["nonce"] != self.request["nonce"]:
            self._violation("the pong does not echo the ping's nonce", "nonce_mismatch")
        self.state = self.DONE
        return m
