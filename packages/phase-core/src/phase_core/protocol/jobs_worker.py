"""The answering side of a node stream, as a state machine (sans-I/O).

A ``Responder`` takes the messages a peer sends on one stream (``receive``,
``None`` for the end of the stream) and returns events; the node decides
admission and runs the job, and tells the machine (``accept``, ``reject``,
``admit``, ``result``, ``error``, ``answer_get``, ``answer_node_record``); the
messages to send come out of ``outbox()``. No I/O, no asyncio; the clock is
injected and the wait for ``run`` is a ``deadline`` the adapter enforces.

States of a job stream::

    idle ─offer→ offered ─accept()→ accepted ─run→ verifying ─admit(), started()→ running
                    └─reject()→ done       (deadline) ┘   └─reject()→ done
    running ─result()/error()→ done;  end of stream while running → SubmitterGone

Other requests end after their one answer. A ``batch`` is handed over at once
(``BatchArrived``): ``jobs_batch.BatchResponder`` owns that stream, and each of
its jobs goes through a ``Responder`` of its own, as if on a stream of its own.
A submitter serving its blobs uses a ``Responder`` that allows only ``get``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from phase_core.errors import InternalError
from phase_core.protocol import jobs
from phase_core.protocol.jobs import Clock, Machine, SendBlob

RUN_WAIT_S = 10.0  # after accept, the submitter must send run within this
MIN_PULL_RATE = 256 << 10  # bytes/s a submitter must sustain when the worker pulls its blobs
PULL_GRACE_S = 10.0

WORKER_REQUESTS = ("offer", "batch", "get", "ping", "get_node_record", "dht_*")
BLOBS_ONLY = ("get",)

IDLE, OFFERED, ACCEPTED, VERIFYING, RUNNING, ANSWERING = (
    "idle", "offered", "accepted", "verifying", "running", "answering")


@dataclass(frozen=True, slots=True)
class Offered:
    job: str
    offer: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RunArrived:
    manifest: dict[str, Any]


@dataclass(frozen=True, slots=True)
class BlobWanted:
    id: str
    offset: int


@dataclass(frozen=True, slots=True)
class Pinged:
    nonce: str


@dataclass(frozen=True, slots=True)
class NodeRecordWanted:
    pass


@dataclass(frozen=True, slots=True)
class DhtRequest:
    message: dict[str, Any]


@dataclass(frozen=True, slots=True)
class BatchArrived:
    """A ``batch`` of jobs: ``jobs_batch.BatchResponder`` owns the stream from here."""

    message: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SubmitterGone:
    """The submitter ended the stream while its job ran: cancel the guest."""

    job: str


Event = (Offered | RunArrived | BlobWanted | Pinged | NodeRecordWanted | DhtRequest
         | BatchArrived | SubmitterGone)


def pull_timeout(size: int) -> float:
    """How long a submitter may take to deliver a blob of ``size`` bytes."""
    return PULL_GRACE_S + size / MIN_PULL_RATE


class Responder(Machine):
    def __init__(self, now: Clock, *, requests: tuple[str, ...] = WORKER_REQUESTS,
                 run_wait_s: float = RUN_WAIT_S) -> None:
        super().__init__(now, IDLE)
        self.requests = requests
        self.run_wait_s = run_wait_s
        self.job: str | None = None
        self.offer: dict[str, Any] | None = None
        self.gone = False
        self._admitted = False

    # -- input ---------------------------------------------------------------
    def receive(self, msg: dict[str, Any] | None) -> Event | None:
        """One message from the peer (None: the peer ended the stream)."""
        self._raise_if_failed()
        st = self.state
        if st == IDLE:
            if msg is None:  # the peer opened a stream and ended it: nothing to do
                self.state = self.DONE
                return None
            return self._request(msg)
        if st == ACCEPTED:
            run = self._expect(msg, "run")
            self.state, self.deadline = VERIFYING, None
            return RunArrived(run["manifest"])
        if st == RUNNING and msg is None:
            if self.gone:
                return None
            self.gone = True
            assert self.job is not None
            return SubmitterGone(self.job)
        if msg is None:
            return None
        self._violation(f"{str(msg.get('type'))[:32]!r} while the stream is {st}; the peer "
                        "must wait for the answer")

    def _request(self, msg: dict[str, Any]) -> Event:
        t = msg.get("type")
        if isinstance(t, str) and t.startswith("dht_") and "dht_*" in self.requests:
            self.state = self.DONE  # the DHT handler owns the stream from here
            return DhtRequest(msg)
        if t == "batch" and t in self.requests:
            self.state = self.DONE  # checked and answered by jobs_batch.BatchResponder
            return BatchArrived(msg)
        if t not in self.requests:
            self._violation(f"unknown request {str(t)[:32]!r}; this side answers "
                            + ", ".join(self.requests))
        m = self._expect(msg, str(t))
        if t == "offer":
            self.state, self.job, self.offer = OFFERED, m["job"], m
            return Offered(m["job"], m)
        self.state = ANSWERING
        if t == "get":
            return BlobWanted(m["id"], int(m.get("offset", 0)))
        if t == "ping":
            self._send({"type": "pong", "nonce": m["nonce"]})
            self.state = self.DONE
            return Pinged(m["nonce"])
        return NodeRecordWanted()

    # -- decisions of the node -------------------------------------------------
    def accept(self) -> None:
        self._need(OFFERED)
        self._send({"type": "accept", "job": self.job})
        self.state, self.deadline = ACCEPTED, self.now() + self.run_wait_s

    def reject(self, reason: str, message: str = "") -> None:
        """Refuse the offer, or the run after verifying it."""
        self._need(OFFERED, VERIFYING)
        self._send(jobs.reject(self.job, reason, message))
        self.state = self.DONE

    def admit(self, job_id: str, body: dict[str, Any]) -> bool:
        """The run's manifest verified as ``job_id`` with ``body``: it must be the
        job that was offered. False (and a queued ``reject``) if it is not. The
        node may still ``reject`` (a replay) before it calls ``started``."""
        self._need(VERIFYING)
        assert self.offer is not None
        mismatch = jobs.matches_offer(self.offer, body, job_id)
        if mismatch is not None:
            self.reject("invalid_request", mismatch)
            return False
        self._admitted = True
        return True

    def started(self) -> None:
        """The admitted job is on its way (fetching blobs, queued, running)."""
        self._need(VERIFYING)
        if not self._admitted:
            raise InternalError("started() before admit()")
        self.state = RUNNING

    def result(self, receipt_env: dict[str, Any], stdout: bytes, stderr: bytes) -> None:
        self._need(RUNNING)
        if receipt_env["body"]["job"] != self.job:
            raise InternalError("the receipt is for another job than this stream's")
        self._send({"type": "result", "job": self.job, "receipt": receipt_env},
                   SendBlob(stdout), SendBlob(stderr))
        self.state = self.DONE

    def error(self, slug: str, message: str) -> None:
        """The accepted job could not run."""
        self._need(ACCEPTED, VERIFYING, RUNNING)
        self._send(jobs.error(slug, message))
        self.state = self.DONE

    def answer_get(self, cid: str, size: int | None, offset: int) -> int | None:
        """Answer a ``get``: ``size`` is the blob's (None: not here). Returns how many
        bytes from ``offset`` the adapter must now send as one blob frame, or None."""
        self._need(ANSWERING)
        self.state = self.DONE
        if size is None or offset > size:
            self._send({"type": "not_found", "id": cid})
            return None
        self._send({"type": "blob", "id": cid, "size": size - offset, "offset": offset})
        return size - offset

    def answer_node_record(self, record_env: dict[str, Any]) -> None:
        self._need(ANSWERING)
        self._send({"type": "node_record", "record": record_env})
        self.state = self.DONE
