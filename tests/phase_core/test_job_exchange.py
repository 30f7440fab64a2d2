"""The job exchange state machines, paired in memory (no sockets, no asyncio).

Messages travel through the real frame encoder and decoder; the clock is a
variable the test moves.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from phase_core import envelope, manifest
from phase_core.canonical import content_id
from phase_core.errors import (
    DigestMismatch,
    InternalError,
    PhaseError,
    ProtocolViolation,
    Timeout,
    Unavailable,
)
from phase_core.identity import Identity
from phase_core.protocol import framing, jobs_client, jobs_worker
from phase_core.protocol.jobs import SendBlob
from phase_core.protocol.jobs_client import (
    Accepted,
    BlobRequest,
    Failed,
    Finished,
    Query,
    Refused,
    Submission,
)
from phase_core.protocol.jobs_worker import (
    BlobWanted,
    Offered,
    Responder,
    RunArrived,
    SubmitterGone,
)

SUBMITTER = Identity.generate()
WORKER = Identity.generate()
MODULE, STDIN = b"\0asm module bytes", b"some stdin"
NOW = 1_800_000_000


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def job(stdin: bytes | None = STDIN, **kw: Any) -> tuple[dict[str, Any], str]:
    body = manifest.build(module=content_id(MODULE),
                          stdin=content_id(stdin) if stdin is not None else None, now=NOW,
                          **kw)
    env = envelope.sign(manifest.TYPE, body, [SUBMITTER])
    return env, envelope.parse(env).id


def receipt_for(job_id: str) -> dict[str, Any]:
    return envelope.sign("receipt", {"job": job_id}, [WORKER])  # shape only: not verified here


def wire(items: list[Any]) -> list[Any]:
    """Encode and decode through the real framing: control frames come back as dicts,
    blob frames as SendBlob."""
    dec = framing.FrameDecoder()
    for it in items:
        if isinstance(it, SendBlob):
            dec.feed(framing.encode_blob_header(len(it.data)) + it.data)
        else:
            dec.feed(framing.encode_control(it))
    out: list[Any] = []
    blob: bytearray | None = None
    for ev in dec.events():
        if isinstance(ev, framing.Control):
            out.append(ev.message)
        elif isinstance(ev, framing.BlobStart):
            blob = bytearray()
        elif isinstance(ev, framing.BlobData):
            assert blob is not None
            blob += ev.data
        else:
            assert blob is not None
            out.append(SendBlob(bytes(blob)))
            blob = None
    return out


def feed(m: Submission, items: list[Any]) -> list[Any]:
    evs = []
    for it in wire(items):
        evs.append(m.receive_blob(it.data) if isinstance(it, SendBlob) else m.receive(it))
    return [e for e in evs if e is not None]


def pair(clock: Clock | None = None, **kw: Any) -> tuple[Submission, Responder, str, dict]:
    clock = clock or Clock()
    env, job_id = job(**kw)
    sizes = {content_id(MODULE): len(MODULE), content_id(STDIN): len(STDIN)}
    return (Submission(clock, env, job_id, sizes, timeout_s=60), Responder(clock), job_id,
            env)


def run_to_running(c: Submission, w: Responder) -> list[Any]:
    """offer+run out; the worker accepts and admits; returns the client's events."""
    c.start()
    sent = wire(c.outbox())
    ev = w.receive(sent[0])
    assert isinstance(ev, Offered)
    w.accept()
    client_events = feed(c, w.outbox())
    ev2 = w.receive(sent[1])
    assert isinstance(ev2, RunArrived)
    parsed = envelope.parse(ev2.manifest)
    assert w.admit(parsed.id, parsed.body)
    w.started()
    return client_events


# -- the whole exchange ------------------------------------------------------------------

def test_a_job_runs_end_to_end_and_only_its_blobs_are_served() -> None:
    c, w, job_id, _env = pair()
    assert not c.may_serve(content_id(MODULE))  # nothing offered yet
    assert run_to_running(c, w) == [Accepted(job_id)]
    assert c.may_serve(content_id(MODULE)) and c.may_serve(content_id(STDIN))
    assert not c.may_serve(content_id(b"anything else"))
    w.result(receipt_for(job_id), b"out", b"err")
    assert w.finished
    evs = feed(c, w.outbox())
    assert evs == [Finished(receipt_for(job_id), b"out", b"err")]
    assert c.finished and not c.may_serve(content_id(MODULE))
    assert c.receive(None) is None and w.receive(None) is None  # clean ends


def test_offer_and_run_are_pipelined_and_the_offer_is_exact() -> None:
    c, _, job_id, env = pair()
    c.start()
    offer, run = wire(c.outbox())
    assert offer == {"type": "offer", "job": job_id, "module": content_id(MODULE),
                     "module_bytes": len(MODULE), "stdin": content_id(STDIN),
                     "stdin_bytes": len(STDIN), "requirements": env["body"]["requirements"],
                     "limits": env["body"]["limits"]}
    assert run == {"type": "run", "manifest": env}


def test_no_stdin_offers_zero_bytes() -> None:
    c, _, _, _ = pair(stdin=None)
    c.start()
    assert wire(c.outbox())[0]["stdin_bytes"] == 0


def test_a_rejected_offer_ends_the_exchange_and_its_run_is_never_read() -> None:
    c, w, _job_id, _ = pair()
    c.start()
    offer, run = wire(c.outbox())
    w.receive(offer)
    w.reject("queue_full", "busy")
    assert feed(c, w.outbox()) == [Refused("queue_full", "busy", "offer")]
    assert Refused("queue_full", "", "offer").retryable
    assert not Refused("not_authorized", "", "offer").retryable
    assert w.finished and not c.may_serve(content_id(MODULE))
    with pytest.raises(ProtocolViolation) as ei:  # an adapter that read it anyway
        w.receive(run)
    assert ei.value.slug == "unexpected_message"


def test_a_reject_after_accept_is_the_run_stage() -> None:
    c, w, job_id, _ = pair()
    c.start()
    offer, run = wire(c.outbox())
    w.receive(offer)
    w.accept()
    w.receive(run)
    w.reject("replay", "seen")
    assert feed(c, w.outbox()) == [Accepted(job_id), Refused("replay", "seen", "run")]


def test_an_error_after_accept_is_a_failure() -> None:
    c, w, _job_id, _ = pair()
    run_to_running(c, w)
    w.error("missing_input", "no module")
    assert feed(c, w.outbox()) == [Failed("missing_input", "no module")]


def test_a_run_that_is_not_the_offered_job_is_rejected() -> None:
    c, w, _job_id, _ = pair()
    c.start()
    offer, _ = wire(c.outbox())
    w.receive(offer)
    w.accept()
    other, other_id = job(stdin=b"other stdin")
    ev = w.receive({"type": "run", "manifest": other})
    assert isinstance(ev, RunArrived)
    with pytest.raises(InternalError):
        w.started()  # not admitted
    assert not w.admit(other_id, other["body"])
    *_, rej = w.outbox()
    assert rej["type"] == "reject" and rej["reason"] == "invalid_request"
    assert w.finished


# -- every order of what the worker sends, as the submitter sees it ----------------------

def _items(job_id: str, other: str) -> dict[str, Any]:
    return {
        "accept": {"type": "accept", "job": job_id},
        "reject": {"type": "reject", "job": job_id, "reason": "queue_full", "message": ""},
        "result": {"type": "result", "job": job_id, "receipt": receipt_for(job_id)},
        "error": {"type": "error", "error": "job_failed", "message": ""},
        "blob": SendBlob(b"x"),
        "other_accept": {"type": "accept", "job": other},
        "other_result": {"type": "result", "job": other, "receipt": receipt_for(other)},
    }


LEGAL = [("accept", "result", "blob", "blob"), ("accept", "reject"), ("accept", "error"),
         ("reject",)]


def _legal_prefix(seq: tuple[str, ...]) -> bool:
    return any(full[:len(seq)] == seq for full in LEGAL)


def test_every_order_of_up_to_four_worker_messages() -> None:
    """A sequence is accepted exactly when it is a prefix of a legal exchange; the
    first message that breaks the order raises the right slug."""
    _, other = job(stdin=b"another job")
    names = ["accept", "reject", "result", "error", "blob", "other_accept", "other_result"]
    checked = 0
    for n in range(1, 5):
        for seq in itertools.product(names, repeat=n):
            c, _, job_id, _ = pair()
            c.start()
            c.outbox()
            items = _items(job_id, other)
            for i, name in enumerate(seq):
                if _legal_prefix(seq[:i + 1]):
                    feed(c, [items[name]])
                    continue
                want = ("job_mismatch" if name.startswith("other_")
                        and _legal_prefix((*seq[:i], name[6:])) else "unexpected_message")
                with pytest.raises(ProtocolViolation) as ei:
                    feed(c, [items[name]])
                assert ei.value.slug == want, (seq, i)
                with pytest.raises(ProtocolViolation):  # poisoned from now on
                    c.receive(None)
                break
            checked += 1
    assert checked == sum(len(names) ** n for n in range(1, 5))


@pytest.mark.parametrize("received", [[], ["accept"], ["accept", "result"],
                                      ["accept", "result", "blob"]])
def test_the_stream_ending_early_is_truncated(received: list[str]) -> None:
    c, _, job_id, _ = pair()
    c.start()
    items = _items(job_id, job_id)
    feed(c, [items[n] for n in received])
    with pytest.raises(ProtocolViolation) as ei:
        c.receive(None)
    assert ei.value.slug == "truncated"


def test_an_output_blob_over_the_jobs_cap_is_refused() -> None:
    c, w, job_id, _env = pair(limits=dict(manifest.DEFAULT_LIMITS, output_bytes=4))
    run_to_running(c, w)
    assert c.expect_blob is None
    feed(c, [{"type": "result", "job": job_id, "receipt": receipt_for(job_id)}])
    assert c.expect_blob == 4
    feed(c, [SendBlob(b"1234")])
    with pytest.raises(ProtocolViolation) as ei:
        feed(c, [SendBlob(b"12345")])
    assert ei.value.slug == "frame_too_large"


def test_the_submission_deadline_is_a_value_of_the_injected_clock() -> None:
    clock = Clock()
    c, _, _, _ = pair(clock)
    assert c.deadline is None
    c.start()
    assert c.deadline == 160.0 and c.time_left() == 60.0
    clock.t = 1000.0
    assert c.time_left() == 0.0
    with pytest.raises(Timeout):
        c.deadline_passed("the job did not finish")


# -- the worker side ---------------------------------------------------------------------

def test_the_worker_waits_for_run_until_a_deadline() -> None:
    clock = Clock()
    c, w, _, _ = pair(clock)
    c.start()
    w.receive(wire(c.outbox())[0])
    assert w.deadline is None
    w.accept()
    assert w.deadline == 100.0 + jobs_worker.RUN_WAIT_S
    clock.t += 3
    assert w.time_left() == jobs_worker.RUN_WAIT_S - 3
    with pytest.raises(Timeout):
        w.deadline_passed("no run")
    w.error("timeout", "no run")  # the worker still tells the submitter why
    assert w.outbox()[-1] == {"type": "error", "error": "timeout", "message": "no run"}
    assert w.finished


@pytest.mark.parametrize("first", ["run", "accept", "result", "pong", "node_record", "nope"])
def test_a_stream_must_open_with_a_request(first: str) -> None:
    _, _, job_id, env = pair()
    msgs = {"run": {"type": "run", "manifest": env}, "accept": {"type": "accept", "job": job_id},
            "result": {"type": "result", "job": job_id, "receipt": receipt_for(job_id)},
            "pong": {"type": "pong", "nonce": "a"},
            "node_record": {"type": "node_record", "record": env}, "nope": {"type": "nope"}}
    w = Responder(Clock())
    with pytest.raises(ProtocolViolation) as ei:
        w.receive(msgs[first])
    assert ei.value.slug == "unexpected_message"


def test_duplicates_and_messages_while_the_job_runs() -> None:
    c, w, _, env = pair()
    c.start()
    offer, _run = wire(c.outbox())
    w.receive(offer)
    w.accept()
    with pytest.raises(ProtocolViolation) as ei:  # a second offer instead of the run
        w.receive(offer)
    assert ei.value.slug == "unexpected_message"

    c, w, _job_id, env = pair()
    run_to_running(c, w)
    with pytest.raises(ProtocolViolation) as ei:  # the run again, while it runs
        w.receive({"type": "run", "manifest": env})
    assert ei.value.slug == "unexpected_message"


def test_the_submitter_going_away_while_the_job_runs_is_an_event_once() -> None:
    c, w, job_id, _ = pair()
    run_to_running(c, w)
    assert w.receive(None) == SubmitterGone(job_id)
    assert w.receive(None) is None
    w.error("cancelled", "the submitter went away")  # the adapter may still end it
    assert w.finished


def test_a_run_that_ends_before_it_arrives_is_truncated() -> None:
    c, w, _, _ = pair()
    c.start()
    w.receive(wire(c.outbox())[0])
    w.accept()
    with pytest.raises(ProtocolViolation) as ei:
        w.receive(None)
    assert ei.value.slug == "truncated"


def test_a_malformed_offer_is_bad_message() -> None:
    c, _, _, _ = pair()
    c.start()
    offer = dict(wire(c.outbox())[0], module_bytes=-1)
    with pytest.raises(ProtocolViolation) as ei:
        Responder(Clock()).receive(offer)
    assert ei.value.slug == "bad_message"


def test_the_adapter_calling_out_of_order_is_a_bug_not_a_violation() -> None:
    w = Responder(Clock())
    with pytest.raises(InternalError):
        w.accept()
    c, w, _job_id, _ = pair()
    run_to_running(c, w)
    with pytest.raises(InternalError):
        w.result(receipt_for("sha256:" + "0" * 64), b"", b"")


def test_a_blob_server_answers_only_get() -> None:
    c, _, _, _ = pair()
    c.start()
    offer = wire(c.outbox())[0]
    srv = Responder(Clock(), requests=jobs_worker.BLOBS_ONLY)
    with pytest.raises(ProtocolViolation) as ei:
        srv.receive(offer)
    assert ei.value.slug == "unexpected_message"
    srv = Responder(Clock(), requests=jobs_worker.BLOBS_ONLY)
    with pytest.raises(ProtocolViolation):
        srv.receive({"type": "dht_find_node", "target": "x"})


@pytest.mark.parametrize(("size", "offset", "want"), [(10, 0, 10), (10, 4, 6), (10, 10, 0),
                                                      (10, 11, None), (None, 0, None)])
def test_get_is_answered_with_the_rest_of_the_blob(size: int | None, offset: int,
                                                    want: int | None) -> None:
    cid = content_id(b"0123456789")
    w = Responder(Clock())
    assert w.receive({"type": "get", "id": cid, "offset": offset}) == BlobWanted(cid, offset)
    assert w.answer_get(cid, size, offset) == want
    (msg,) = w.outbox()
    assert msg["type"] == ("not_found" if want is None else "blob")
    with pytest.raises(ProtocolViolation):  # one request per stream
        w.receive({"type": "get", "id": cid})


def test_ping_and_node_record() -> None:
    w = Responder(Clock())
    q = Query(Clock(), {"type": "ping", "nonce": "n1"})
    q.start()
    w.receive(wire(q.outbox())[0])
    assert q.receive(wire(w.outbox())[0]) == {"type": "pong", "nonce": "n1"}
    q = Query(Clock(), {"type": "ping", "nonce": "n1"})
    q.start()
    with pytest.raises(ProtocolViolation) as ei:
        q.receive({"type": "pong", "nonce": "n2"})
    assert ei.value.slug == "nonce_mismatch"
    w = Responder(Clock())
    q = Query(Clock(), {"type": "get_node_record"})
    q.start()
    w.receive(wire(q.outbox())[0])
    rec = envelope.sign("node_record", {"x": 1}, [WORKER])
    w.answer_node_record(rec)
    assert q.receive(wire(w.outbox())[0])["record"] == rec


# -- pulling a blob ----------------------------------------------------------------------

CID = content_id(b"0123456789")


def request(**kw: Any) -> BlobRequest:
    r = BlobRequest(Clock(), CID, **{"size": 10, "max_bytes": 100, **kw})
    r.start()
    return r


def test_a_blob_request_counts_the_bytes() -> None:
    r = request(offset=4)
    assert r.outbox() == [{"type": "get", "id": CID, "offset": 4}]
    assert r.receive({"type": "blob", "id": CID, "size": 6, "offset": 4}) == 6
    assert r.expect_blob == 6
    r.receive_chunk(2)
    r.receive_chunk(4)
    r.receive_blob_end()
    assert r.finished


@pytest.mark.parametrize(("answer", "error", "slug"), [
    ({"type": "not_found", "id": CID}, Unavailable, "not_found"),
    ({"type": "not_found", "id": content_id(b"x")}, ProtocolViolation, "wrong_blob"),
    ({"type": "blob", "id": content_id(b"x"), "size": 10}, ProtocolViolation, "wrong_blob"),
    ({"type": "blob", "id": CID, "size": 10, "offset": 3}, ProtocolViolation, "wrong_blob"),
    ({"type": "blob", "id": CID, "size": 9}, DigestMismatch, "size_mismatch"),
    ({"type": "accept", "job": CID}, ProtocolViolation, "unexpected_message"),
    ({"type": "blob", "id": CID}, ProtocolViolation, "bad_message"),
    (None, ProtocolViolation, "truncated"),
])
def test_a_wrong_answer_to_get(answer: Any, error: type[PhaseError], slug: str) -> None:
    r = request()
    with pytest.raises(error) as ei:
        r.receive(answer)
    assert ei.value.slug == slug


def test_a_blob_over_the_cap_when_the_size_is_unknown() -> None:
    r = request(size=None, max_bytes=5)
    with pytest.raises(DigestMismatch) as ei:
        r.receive({"type": "blob", "id": CID, "size": 6})
    assert ei.value.slug == "too_large"


def test_a_short_or_long_blob_is_a_violation() -> None:
    r = request()
    r.receive({"type": "blob", "id": CID, "size": 10})
    r.receive_chunk(9)
    with pytest.raises(ProtocolViolation) as ei:
        r.receive_blob_end()
    assert ei.value.slug == "truncated"
    r = request()
    r.receive({"type": "blob", "id": CID, "size": 10})
    with pytest.raises(ProtocolViolation) as ei:
        r.receive_chunk(11)
    assert ei.value.slug == "bad_message"


def test_pull_timeout_keeps_the_minimum_rate() -> None:
    assert jobs_worker.pull_timeout(0) == jobs_worker.PULL_GRACE_S
    assert jobs_worker.pull_timeout(jobs_worker.MIN_PULL_RATE * 30) == \
        jobs_worker.PULL_GRACE_S + 30
    assert jobs_client.RETRYABLE == {"queue_full", "shutting_down"}


def test_every_order_of_up_to_four_submitter_messages() -> None:
    """The worker side: an offer, then the run, then nothing until the result; a
    second offer, a run first, a duplicate run, any request inside a job stream, or
    the stream ending before the run are violations with the right slug."""
    c, _, _, _ = pair()
    c.start()
    offer, run = wire(c.outbox())
    items: dict[str, Any] = {"offer": offer, "run": run, "ping": {"type": "ping", "nonce": "n"},
                             "get": {"type": "get", "id": content_id(MODULE)}, "end": None}
    legal = [("offer", "run", "end", "end"), ("ping", "end", "end", "end"), ("get",),
             ("end", "end", "end", "end")]
    checked = 0
    for n in range(1, 5):
        for seq in itertools.product(items, repeat=n):
            w = Responder(Clock())
            for i, name in enumerate(seq):
                prefix = seq[:i + 1]
                if any(full[:len(prefix)] == prefix for full in legal):
                    ev = w.receive(items[name])
                    if isinstance(ev, Offered):
                        w.accept()
                    elif isinstance(ev, RunArrived):
                        parsed = envelope.parse(ev.manifest)
                        assert w.admit(parsed.id, parsed.body)
                        w.started()
                    elif isinstance(ev, BlobWanted):
                        w.answer_get(ev.id, None, 0)
                        break  # done; a get stream ends after its answer
                    continue
                want = "truncated" if name == "end" and w.state == "accepted" \
                    else "unexpected_message"
                with pytest.raises(ProtocolViolation) as ei:
                    w.receive(items[name])
                assert ei.value.slug == want, (seq, i)
                break
            checked += 1
    assert checked == sum(len(items) ** k for k in range(1, 5))
