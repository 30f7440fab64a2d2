"""Several jobs on one stream, as two state machines (sans-I/O).

The submitter opens a stream and sends one ``batch`` control frame: up to
``MAX_BATCH_JOBS`` entries, each a job's own signed manifest with the sizes an
``offer`` would carry, the whole frame at most ``MAX_BATCH_BYTES`` (the
transport's control-frame cap checks that before buffering it). Nothing is
weakened: the worker turns each entry into the offer and ``run`` of the
one-job exchange and puts it through the same per-job path (admission,
verification, replay check, fences, durable receipt). The answers come back on
the same stream, one per job, in the order the jobs end::

    ── batch {jobs: [{job, module_bytes, stdin_bytes, manifest}, …]} ──►
    ◄── reject {job} | error {job} | result {job} + stdout + stderr   (one per job)

There is no ``accept``. A ``result`` and its two blobs are never split by
another job's answer. The worker ends the stream after the last answer; the
submitter sends nothing more until then, and ending its half early means it
went away (every job of the batch still running is stopped, as for one job).

A worker advertises the option as the ``job-batch`` feature of its node
record's capabilities; a submitter sends ``batch`` only to a worker that
does (an older worker would drop the connection for an unknown request).

Violations: ``bad_message`` (a malformed batch, an empty or oversize one, the
same job twice), ``job_mismatch`` (an answer for a job not in the batch),
``unexpected_message`` (a second answer for a job; anything from the
submitter after the batch), ``truncated`` (the stream ended before every job
was answered).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from phase_core import canonical
from phase_core import schema as s
from phase_core.errors import InternalError, PhaseError, ProtocolViolation
from phase_core.protocol import jobs
from phase_core.protocol.framing import DEFAULT_MAX_CONTROL_BYTES, FrameTooLarge
from phase_core.protocol.jobs import ENVELOPE, Clock, Machine, Out, SendBlob
from phase_core.protocol.jobs_client import Failed, Finished, Refused

FEATURE = "job-batch"
MAX_BATCH_JOBS = 64
MAX_BATCH_BYTES = DEFAULT_MAX_CONTROL_BYTES  # the encoded batch frame
_FRAME_OVERHEAD = 64  # '{"jobs":[…],"type":"batch"}' around the entries

ENTRY = s.obj({"job": s.content_id, "module_bytes": s.integer(1), "stdin_bytes": s.integer(0),
               "manifest": ENVELOPE})
BATCH = s.obj({"type": s.string(32), "jobs": s.array(ENTRY, MAX_BATCH_JOBS, min_items=1)})

SENDING, ANSWERS, STDOUT, STDERR = "new", "await_answers", "await_stdout", "await_stderr"


@dataclass(frozen=True, slots=True)
class Answer:
    """One job's end: refused, failed, or finished (receipt and outputs, not yet verified)."""

    job: str
    outcome: Refused | Failed | Finished


class BatchSubmission(Machine):
    """The submitter's side: ``add`` jobs until it says the batch is full, ``start``,
    then feed the worker's messages; each job's ``Answer`` comes out as it arrives."""

    def __init__(self, now: Clock, *, timeout_s: float, max_jobs: int = MAX_BATCH_JOBS,
                 max_bytes: int = MAX_BATCH_BYTES) -> None:
        super().__init__(now, SENDING)
        self.timeout_s = timeout_s
        self.max_jobs = min(max_jobs, MAX_BATCH_JOBS)
        self.max_bytes = min(max_bytes, MAX_BATCH_BYTES)
        self._entries: list[dict[str, Any]] = []
        self._bytes = _FRAME_OVERHEAD
        self._pending: dict[str, dict[str, Any]] = {}  # job → manifest body, until answered
        self._blobs: dict[str, int] = {}  # content id → pending jobs that use it
        self._current: str | None = None  # the job whose result blobs are due
        self._receipt: dict[str, Any] | None = None
        self._stdout = b""

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def jobs(self) -> list[str]:
        return [e["job"] for e in self._entries]

    def add(self, manifest_env: dict[str, Any], job_id: str, module_bytes: int,
            stdin_bytes: int) -> bool:
        """Add one job; False (nothing added) when it would pass a cap or is already in."""
        self._need(SENDING)
        if job_id in self._pending or len(self._entries) >= self.max_jobs:
            return False
        entry = {"job": job_id, "module_bytes": module_bytes, "stdin_bytes": stdin_bytes,
                 "manifest": manifest_env}
        size = len(canonical.canonical(entry)) + 1
        if self._bytes + size > self.max_bytes:
            return False
        body = manifest_env["body"]
        self._entries.append(entry)
        self._bytes += size
        self._pending[job_id] = body
        for cid in (body["module"], body["stdin"]):
            if cid is not None:
                self._blobs[cid] = self._blobs.get(cid, 0) + 1
        return True

    def start(self) -> None:
        self._need(SENDING)
        if not self._entries:
            raise InternalError("an empty batch")
        self._send({"type": "batch", "jobs": self._entries})
        self._entries = []  # the frame holds them now; only the pending map is kept
        self.state, self.deadline = ANSWERS, self.now() + self.timeout_s

    @property
    def pending(self) -> list[str]:
        return list(self._pending)

    @property
    def expect_blob(self) -> int | None:
        if self.state not in (STDOUT, STDERR):
            return None
        assert self._current is not None
        return int(self._pending[self._current]["limits"]["output_bytes"])

    def may_serve(self, cid: str) -> bool:
        """The worker may fetch a blob only while a job that uses it is unanswered."""
        return self.state != SENDING and self._blobs.get(cid, 0) > 0

    def receive(self, msg: dict[str, Any] | None) -> list[Answer]:
        self._raise_if_failed()
        st = self.state
        if st in (STDOUT, STDERR):
            self._violation("expected the " + ("stdout" if st == STDOUT else "stderr")
                            + " blob" + (", the stream ended" if msg is None else ""),
                            "truncated" if msg is None else "unexpected_message")
        if st == self.DONE:
            if msg is None:
                return []
            self._violation(f"{str(msg.get('type'))[:32]!r} after every job was answered")
        self._need(ANSWERS)
        if msg is None:
            self._violation(f"the stream ended with {len(self._pending)} job(s) unanswered",
                            "truncated")
        m = self._expect(msg, "reject", "error", "result")
        job = m.get("job")
        if job is None:  # the whole batch refused or failed (before any job ran)
            out = Refused(m["reason"], m["message"], "offer") if m["type"] == "reject" \
                else Failed(m["error"], m["message"])
            return [self._answered(j, out) for j in list(self._pending)]
        if job not in self._pending:
            self._violation(f"the worker answered for job {job}, which is not in the batch "
                            "or was answered already", "job_mismatch")
        if m["type"] == "reject":
            return [self._answered(job, Refused(m["reason"], m["message"], "run"))]
        if m["type"] == "error":
            return [self._answered(job, Failed(m["error"], m["message"]))]
        self._current, self._receipt, self.state = job, m["receipt"], STDOUT
        return []

    def receive_blob(self, data: bytes) -> list[Answer]:
        self._raise_if_failed()
        if self.state not in (STDOUT, STDERR):
            self._violation(f"a blob frame in state {self.state}")
        cap = self.expect_blob
        assert cap is not None and self._current is not None and self._receipt is not None
        if len(data) > cap:
            self._fail(FrameTooLarge(f"an output blob of {len(data)} bytes is over the job's "
                                     f"output_bytes of {cap}"))
        if self.state == STDOUT:
            self._stdout, self.state = data, STDERR
            return []
        job, rec, out = self._current, self._receipt, self._stdout
        self._current, self._receipt, self._stdout, self.state = None, None, b"", ANSWERS
        return [self._answered(job, Finished(rec, out, data))]

    def _answered(self, job: str, outcome: Refused | Failed | Finished) -> Answer:
        body = self._pending.pop(job)
        for cid in (body["module"], body["stdin"]):
            if cid is not None:
                self._blobs[cid] -= 1
                if not self._blobs[cid]:
                    del self._blobs[cid]
        if not self._pending:
            self.state = self.DONE
        return Answer(job, outcome)


@dataclass(frozen=True, slots=True)
class BatchJob:
    """One job of a batch, as the one-job exchange's first two messages."""

    job: str
    offer: dict[str, Any]
    run: dict[str, Any]


class BatchResponder(Machine):
    """The worker's side. ``open`` checks the batch and returns its jobs (a job whose
    manifest cannot make an offer is rejected at once, on its own); the node feeds
    each job's one-job ``Responder`` output back through ``job_out``; ``reject``
    refuses a job before it enters that path."""

    def __init__(self, now: Clock) -> None:
        super().__init__(now, SENDING)
        self._open: set[str] = set()
        self._held: dict[str, list[Out]] = {}  # a result waiting for its two blobs

    def open(self, msg: dict[str, Any]) -> list[BatchJob]:
        self._need(SENDING)
        if msg.get("type") != "batch":
            self._violation(f"got {str(msg.get('type'))[:32]!r}; expected batch")
        try:
            BATCH(msg, "batch")
        except ProtocolViolation as e:
            self._fail(e)
        except PhaseError as e:  # Malformed (also an oversize batch: the array's cap)
            self._violation(f"bad batch message: {e}", "bad_message")
        ids = [e["job"] for e in msg["jobs"]]
        if len(set(ids)) != len(ids):
            self._violation("the batch names the same job twice", "bad_message")
        self.state = ANSWERS
        self._open = set(ids)
        out = []
        for entry in msg["jobs"]:
            offer = _offer(entry)
            if offer is None:
                self.reject(entry["job"], "invalid_request",
                            "the manifest's body lacks the fields of a job manifest")
                continue
            out.append(BatchJob(entry["job"], offer,
                                {"type": "run", "manifest": entry["manifest"]}))
        return out

    @property
    def pending(self) -> list[str]:
        return sorted(self._open)

    def reject(self, job: str, reason: str, message: str = "") -> None:
        self._close(job, [jobs.reject(job, reason, message)])

    def job_out(self, job: str, item: Out) -> bool:
        """One thing the job's own ``Responder`` would send on a stream of its own.
        False when the submitter went away: the answer cannot be delivered."""
        self._raise_if_failed()
        if self.state == self.DONE and job not in self._open:
            return False
        self._need(ANSWERS)
        if job not in self._open:
            raise InternalError(f"job {job} is not open on this batch")
        held = self._held.get(job)
        if held is not None:  # a result's blobs
            if not isinstance(item, SendBlob):
                raise InternalError("a message between a result and its blobs")
            held.append(item)
            if len(held) == 3:
                del self._held[job]
                self._close(job, held)
            return True
        if isinstance(item, SendBlob):
            raise InternalError("a blob without a result")
        t = item["type"]
        if t == "accept":  # implied on a batch
            return True
        if t == "result":
            self._held[job] = [item]
        elif t in ("reject", "error"):
            self._close(job, [dict(item, job=job)])
        else:
            raise InternalError(f"a {t} message for a batch job")
        return True

    def receive(self, msg: dict[str, Any] | None) -> list[str]:
        """The submitter's stream after the batch: it sends nothing; its end means it went
        away. Returns the jobs still unanswered (to stop) when it ends, once."""
        self._raise_if_failed()
        if msg is not None:
            self._violation(f"{str(msg.get('type'))[:32]!r} after a batch; the submitter "
                            "must wait for the answers")
        gone, self._open = sorted(self._open), set()
        if self.state != self.DONE:
            self.state = self.DONE
        return gone

    def _close(self, job: str, items: list[Out]) -> None:
        self._need(ANSWERS)
        if job not in self._open:
            raise InternalError(f"job {job} is not open on this batch")
        self._open.discard(job)
        self._send(*items)
        if not self._open:
            self.state = self.DONE


def _offer(entry: dict[str, Any]) -> dict[str, Any] | None:
    """The offer the job's entry stands for, or None if its manifest cannot make one."""
    try:
        offer = jobs.offer_for(entry["manifest"], entry["job"], entry["module_bytes"],
                               entry["stdin_bytes"])
        return jobs.check(offer, "offer")
    except (KeyError, TypeError, PhaseError):
        return None
