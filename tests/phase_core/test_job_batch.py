"""The batch exchange (several jobs on one stream), paired in memory.

The worker side is the batch machine plus one one-job ``Responder`` per job, as
plasmd runs it; messages travel through the real frame encoder and decoder.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from phase_core import envelope, manifest
from phase_core.canonical import content_id
from phase_core.errors import InternalError, ProtocolViolation
from phase_core.protocol.framing import FrameTooLarge
from phase_core.protocol.jobs import SendBlob
from phase_core.protocol.jobs_batch import (
    MAX_BATCH_BYTES,
    MAX_BATCH_JOBS,
    Answer,
    BatchResponder,
    BatchSubmission,
)
from phase_core.protocol.jobs_client import Failed, Finished, Refused
from phase_core.protocol.jobs_worker import (
    BatchArrived,
    Offered,
    Responder,
    RunArrived,
    SubmitterGone,
)
from tests.phase_core.test_job_exchange import (
    MODULE,
    NOW,
    STDIN,
    SUBMITTER,
    Clock,
    receipt_for,
    wire,
)


def jobs(n: int, **kw: Any) -> list[tuple[dict[str, Any], str]]:
    out = []
    for i in range(n):
        body = manifest.build(module=content_id(MODULE), stdin=content_id(STDIN), now=NOW,
                              argv=["m", str(i)], **kw)
        env = envelope.sign(manifest.TYPE, body, [SUBMITTER])
        out.append((env, envelope.parse(env).id))
    return out


def client(batch: list[tuple[dict[str, Any], str]], clock: Clock | None = None
           ) -> BatchSubmission:
    c = BatchSubmission(clock or Clock(), timeout_s=60)
    for env, jid in batch:
        assert c.add(env, jid, len(MODULE), len(STDIN))
    return c


class Worker:
    """The worker side as the node drives it: each job through a one-job Responder."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.m = BatchResponder(clock)
        self.r: dict[str, Responder] = {}

    def open(self, frame: dict[str, Any]) -> list[str]:
        ev = Responder(self.clock).receive(frame)
        assert isinstance(ev, BatchArrived)
        started = []
        for bj in self.m.open(ev.message):
            r = Responder(self.clock)
            assert isinstance(r.receive(bj.offer), Offered)
            r.accept()
            run = r.receive(bj.run)
            assert isinstance(run, RunArrived)
            parsed = envelope.parse(run.manifest)
            if r.admit(parsed.id, parsed.body):
                r.started()
                started.append(bj.job)
            self.r[bj.job] = r
            self.pump(bj.job)
        return started

    def pump(self, job: str) -> None:
        for item in self.r[job].outbox():
            self.m.job_out(job, item)

    def result(self, job: str, out: bytes = b"out", err: bytes = b"err") -> None:
        self.r[job].result(receipt_for(job), out, err)
        self.pump(job)


def feed(c: BatchSubmission, items: list[Any]) -> list[Answer]:
    out: list[Answer] = []
    for it in wire(items):
        out += c.receive_blob(it.data) if isinstance(it, SendBlob) else c.receive(it)
    return out


def start(n: int = 3) -> tuple[BatchSubmission, Worker, list[str]]:
    clock = Clock()
    batch = jobs(n)
    c = client(batch, clock)
    c.start()
    (frame,) = wire(c.outbox())
    w = Worker(clock)
    assert w.open(frame) == [jid for _, jid in batch]
    return c, w, [jid for _, jid in batch]


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_every_job_is_answered_in_whatever_order_the_jobs_end(order: tuple[int, ...]) -> None:
    c, w, ids = start(3)
    assert c.may_serve(content_id(MODULE)) and not c.may_serve(content_id(b"other"))
    got: list[Answer] = []
    for i in order:
        w.result(ids[i], out=f"out{i}".encode())
        got += feed(c, w.m.outbox())  # each answer goes out as its job ends
        assert got[-1] == Answer(ids[i], Finished(receipt_for(ids[i]), f"out{i}".encode(),
                                                  b"err"))
    assert [a.job for a in got] == [ids[i] for i in order]
    assert c.finished and w.m.finished and not c.may_serve(content_id(MODULE))
    assert c.receive(None) == [] and w.m.receive(None) == []


def test_a_job_with_a_bad_manifest_is_rejected_alone_and_the_others_run() -> None:
    clock = Clock()
    (good, gid), (other, oid) = jobs(2)
    forged = dict(other, body=dict(other["body"], argv=["forged"]))  # id no longer matches
    hollow = dict(other, body={"not": "a manifest"})
    c = BatchSubmission(clock, timeout_s=60)
    assert c.add(good, gid, len(MODULE), len(STDIN))
    assert c.add(forged, oid, len(MODULE), len(STDIN))
    hid = "sha256:" + "ab" * 32
    c._pending[hid] = {"module": None, "stdin": None, "limits": {"output_bytes": 10}}
    c._entries.append({"job": hid, "module_bytes": 1, "stdin_bytes": 0, "manifest": hollow})
    c.start()
    (frame,) = wire(c.outbox())
    w = Worker(clock)
    assert w.open(frame) == [gid]
    early = feed(c, w.m.outbox())
    assert {a.job: a.outcome.reason for a in early
            if isinstance(a.outcome, Refused)} == {oid: "invalid_request",
                                                   hid: "invalid_request"}
    assert not c.finished
    w.result(gid)
    assert feed(c, w.m.outbox()) == [Answer(gid, Finished(receipt_for(gid), b"out", b"err"))]
    assert c.finished and w.m.finished


def test_node_rejections_and_errors_name_their_job() -> None:
    c, w, ids = start(3)
    w.m.reject(ids[0], "queue_full", "busy")
    w.r[ids[1]].error("missing_input", "no stdin")
    w.pump(ids[1])
    w.result(ids[2])
    answers = {a.job: a.outcome for a in feed(c, w.m.outbox())}
    assert answers[ids[0]] == Refused("queue_full", "busy", "run")
    assert answers[ids[0]].retryable  # type: ignore[union-attr]
    assert answers[ids[1]] == Failed("missing_input", "no stdin")
    assert isinstance(answers[ids[2]], Finished) and c.finished


def test_a_refusal_of_the_whole_batch_answers_every_job() -> None:
    c, _w, ids = start(2)
    answers = feed(c, [{"type": "reject", "job": None, "reason": "shutting_down",
                        "message": "draining"}])
    assert [a.job for a in answers] == ids and c.finished
    assert all(a.outcome == Refused("shutting_down", "draining", "offer") for a in answers)


def test_the_node_answering_for_a_job_not_in_the_batch_is_a_bug() -> None:
    _c, w, ids = start(1)
    (_, stranger), = jobs(1, env={"X": "1"})
    with pytest.raises(InternalError):
        w.m.job_out(stranger, {"type": "accept", "job": stranger})
    w.result(ids[0])
    with pytest.raises(InternalError):  # a second answer for an answered job
        w.m.reject(ids[0], "replay")


def test_a_result_is_never_split_by_another_jobs_answer() -> None:
    _c, w, ids = start(2)
    r0 = w.r[ids[0]]
    r0.result(receipt_for(ids[0]), b"a", b"b")
    out = r0.outbox()
    w.m.job_out(ids[0], out[0])  # the result, its blobs not yet handed over
    w.m.reject(ids[1], "queue_full")
    assert [m["type"] for m in w.m.outbox()] == ["reject"]
    for item in out[1:]:
        w.m.job_out(ids[0], item)
    assert [type(x).__name__ for x in w.m.outbox()] == ["dict", "SendBlob", "SendBlob"]


# -- the peer breaking the protocol ------------------------------------------------------

def test_an_answer_for_a_job_not_in_the_batch_is_a_job_mismatch() -> None:
    c, _w, _ids = start(2)
    (_, stranger), = jobs(1, env={"X": "1"})
    with pytest.raises(ProtocolViolation) as e:
        c.receive({"type": "reject", "job": stranger, "reason": "replay", "message": ""})
    assert e.value.slug == "job_mismatch"
    with pytest.raises(ProtocolViolation):  # poisoned
        c.receive(None)


def test_a_second_answer_for_a_job_is_refused() -> None:
    c, w, ids = start(2)
    w.result(ids[0])
    items = w.m.outbox()
    feed(c, items)
    with pytest.raises(ProtocolViolation) as e:
        feed(c, items[:1])
    assert e.value.slug == "job_mismatch"


@pytest.mark.parametrize("cut", [0, 1, 2, 3])
def test_a_stream_ending_before_every_answer_is_truncated(cut: int) -> None:
    c, w, ids = start(2)
    w.result(ids[0])
    items = wire(w.m.outbox())[:cut]  # the first job's answer, cut anywhere
    for it in items:
        c.receive_blob(it.data) if isinstance(it, SendBlob) else c.receive(it)
    with pytest.raises(ProtocolViolation) as e:
        c.receive(None)
    assert e.value.slug == "truncated"


def test_output_over_the_jobs_cap_and_blobs_out_of_place() -> None:
    c, _, ids = start(1)
    with pytest.raises(ProtocolViolation):
        c.receive_blob(b"a blob before any result")
    c, _, ids = start(1)
    c.receive({"type": "result", "job": ids[0], "receipt": receipt_for(ids[0])})
    with pytest.raises(FrameTooLarge):
        c.receive_blob(b"x" * ((16 << 20) + 1))
    c, _w, ids = start(1)
    c.receive({"type": "result", "job": ids[0], "receipt": receipt_for(ids[0])})
    with pytest.raises(ProtocolViolation) as e:
        c.receive({"type": "reject", "job": ids[0], "reason": "replay", "message": ""})
    assert e.value.slug == "unexpected_message"


def test_after_the_last_answer_nothing_more_may_come() -> None:
    c, w, ids = start(1)
    w.result(ids[0])
    feed(c, w.m.outbox())
    with pytest.raises(ProtocolViolation) as e:
        c.receive({"type": "error", "error": "x", "message": ""})
    assert e.value.slug == "unexpected_message"


def _frame(entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "batch", "jobs": entries}


def _entry(env: dict[str, Any], jid: str) -> dict[str, Any]:
    return {"job": jid, "module_bytes": len(MODULE), "stdin_bytes": len(STDIN),
            "manifest": env}


@pytest.mark.parametrize("bad", ["empty", "oversize", "duplicate", "malformed", "not_a_batch"])
def test_the_worker_refuses_a_bad_batch_as_a_whole(bad: str) -> None:
    (env, jid), = jobs(1)
    frame = {
        "empty": _frame([]),
        "oversize": _frame([_entry(env, jid)] * (MAX_BATCH_JOBS + 1)),
        "duplicate": _frame([_entry(env, jid), _entry(env, jid)]),
        "malformed": _frame([dict(_entry(env, jid), module_bytes=-1)]),
        "not_a_batch": {"type": "offer"},
    }[bad]
    m = BatchResponder(Clock())
    with pytest.raises(ProtocolViolation) as e:
        m.open(frame)
    assert e.value.slug == ("unexpected_message" if bad == "not_a_batch" else "bad_message")


def test_the_submitter_sends_nothing_after_the_batch_and_its_end_stops_the_rest() -> None:
    _c, w, ids = start(3)
    w.result(ids[0])
    assert w.m.receive(None) == sorted(ids[1:])  # the jobs still running, to stop
    assert not w.m.job_out(ids[1], {"type": "accept", "job": ids[1]})  # nowhere to go
    for jid in ids[1:]:  # each job's own path sees the end of its stream
        assert w.r[jid].receive(None) == SubmitterGone(jid)
    _c2, w2, _ids2 = start(1)
    with pytest.raises(ProtocolViolation) as e:
        w2.m.receive({"type": "run", "manifest": {}})
    assert e.value.slug == "unexpected_message"


def test_the_client_caps_a_batch_by_count_and_bytes_and_refuses_duplicates() -> None:
    many = jobs(MAX_BATCH_JOBS + 1)
    c = BatchSubmission(Clock(), timeout_s=1)
    added = [c.add(env, jid, 1, 0) for env, jid in many]
    assert added == [True] * MAX_BATCH_JOBS + [False] and len(c) == MAX_BATCH_JOBS
    c.start()
    (frame,) = c.outbox()
    from phase_core.canonical import canonical
    assert len(canonical(frame)) <= MAX_BATCH_BYTES
    big = jobs(60, env={f"K{i}": "v" * 200 for i in range(8)})  # ~2.3 KB each
    c = BatchSubmission(Clock(), timeout_s=1)
    n = sum(c.add(env, jid, 1, 0) for env, jid in big)
    assert 0 < n < 60
    c.start()
    assert len(canonical(c.outbox()[0])) <= MAX_BATCH_BYTES
    c = BatchSubmission(Clock(), timeout_s=1)
    env, jid = many[0]
    assert c.add(env, jid, 1, 0) and not c.add(env, jid, 1, 0)
    with pytest.raises(InternalError):
        BatchSubmission(Clock(), timeout_s=1).start()  # an empty batch is a bug


def test_a_worker_without_the_option_calls_a_batch_an_unknown_request() -> None:
    """Why a submitter batches only for workers that advertise ``job-batch``."""
    old = Responder(Clock(), requests=("offer", "get", "ping", "get_node_record"))
    (env, jid), = jobs(1)
    with pytest.raises(ProtocolViolation) as e:
        old.receive(_frame([_entry(env, jid)]))
    assert e.value.slug == "unexpected_message"


def test_the_deadline_covers_the_whole_batch() -> None:
    clock = Clock()
    c = client(jobs(2), clock)
    c.start()
    assert c.time_left() == 60
    clock.t += 61
    assert c.time_left() == 0
