"""A batch's jobs on the job threads (``plasmd.batchrun``): shared flushes, the same
per-job checks, and no receipt handed on before its log entry is durable.

In-process tests drive ``batchrun.Work`` with gated or failing flushes (the
flushes themselves: test_flush_later.py); a process test kills a worker with SIGKILL
right after a batching ``Pool`` got a receipt, and finds every receipt handed out in
the log after the restart.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from pathlib import Path
from typing import Any

from phase_core.errors import Interrupted, IOFailure
from phase_core.groupsync import GroupSync
from phase_core.identity import Identity
from plasmd.batchrun import Work
from plasmd.jobthread import Refused
from plasmd.pool import Job, Pool
from plasmd.receiptlog import ReceiptLog
from plasmd.submit import make_manifest
from tests.phase_core.net.conftest import run
from tests.plasmd.conftest import HELLO, init_home, start_node
from tests.plasmd.test_job_path import (
    STDIN,
    WAIT_S,
    GatedSync,
    assert_logged_after_restart,
    failing_sync,
    make_node,
    offer_of,
    run_one,
)


class CountingSync:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, fd: int) -> None:
        self.calls += 1
        os.fdatasync(fd)


class Events:
    """A ``Mailbox`` stand-in: events from the job threads, in order."""

    def __init__(self) -> None:
        self.got: list[tuple[Any, ...]] = []
        self.cond = threading.Condition()

    def put(self, *event: Any) -> None:
        with self.cond:
            self.got.append(event)
            self.cond.notify_all()

    def ends(self, n: int) -> dict[int, Any]:
        with self.cond:
            assert self.cond.wait_for(lambda: sum(e[0] == "done" for e in self.got) >= n,
                                      WAIT_S)
            return {e[1]: e[2] for e in self.got if e[0] == "done"}


# -- Work: the batch's jobs, each checked on its own ------------------------------------------

def _work(node: Any, sub: Identity, envs: list[dict[str, Any]], events: Events,
          cancel: threading.Event | None = None) -> Work:
    return Work(node, sub.node_id, [(offer_of(e), e) for e in envs],
                cancel or threading.Event(), events)  # type: ignore[arg-type]


def test_work_checks_each_job_alone_and_shares_the_journal_flush(tmp_path: Path) -> None:
    log = ReceiptLog(tmp_path / "r.jsonl")
    node, sub = make_node(tmp_path, log)
    counting = CountingSync()
    node.state.journal_sync = GroupSync("test journal", counting)
    module = HELLO.read_bytes()
    envs = [make_manifest(sub, module, STDIN, argv=["hello.wasm", str(i)]) for i in range(4)]
    forged = make_manifest(sub, module, STDIN, argv=["forged"])
    sig = forged["signatures"][0]["sig"]
    forged["signatures"][0]["sig"] = ("0" if sig[0] != "0" else "1") + sig[1:]
    run_one(node, sub.node_id, offer_of(envs[3]), envs[3])  # already ran: a replay now
    flushes = counting.calls
    ev = Events()
    w = _work(node, sub, [envs[0], forged, envs[1], envs[3], envs[2]], ev)
    w.prepare()
    assert len(w.todo) == 3
    w.run()
    ends = ev.ends(5)
    assert counting.calls == flushes + 1  # three job ids, one journal flush
    assert isinstance(ends[1], Refused) and ends[1].reason == "invalid_request"
    assert isinstance(ends[3], Refused) and ends[3].reason == "replay"
    for i in (0, 2, 4):
        verified, result = ends[i]
        assert result.result.stdout == b"dlroW ,olleH"
        assert result.receipt["body"]["job"] == verified.id
    started = [e[1] for e in ev.got if e[0] == "started"]
    assert sorted(started) == [0, 2, 4]
    logged = [e.receipt["body"]["job"] for e in ReceiptLog(tmp_path / "r.jsonl").entries()]
    assert logged[1:] == [ends[i][0].id for i in (0, 2, 4)]  # every receipt, durable, once


def test_work_answers_nothing_before_its_receipt_is_durable(tmp_path: Path) -> None:
    gate = GatedSync()
    node, sub = make_node(tmp_path, ReceiptLog(tmp_path / "r.jsonl", GroupSync("t", gate)))
    env = make_manifest(sub, HELLO.read_bytes(), STDIN, argv=["hello.wasm"])
    ev = Events()
    w = _work(node, sub, [env], ev)
    w.prepare()
    w.run()  # returns once the guest ran and its receipt was written
    assert gate.entered.wait(WAIT_S)
    assert [e[0] for e in ev.got] == ["started"]  # no answer while the flush is held
    gate.release.set()
    verified, result = ev.ends(1)[0]
    assert result.receipt["body"]["job"] == verified.id


def test_work_runs_guests_while_the_ids_are_flushed_and_logs_receipts_after(
        tmp_path: Path) -> None:
    """No job thread waits for the journal: the guests run while the batch's ids are
    flushed; their receipts are written, and answered, only once that flush is done."""
    journal_gate = GatedSync()
    log = ReceiptLog(tmp_path / "r.jsonl")
    node, sub = make_node(tmp_path, log)
    node.state.journal_sync = GroupSync("test journal", journal_gate)
    module = HELLO.read_bytes()
    envs = [make_manifest(sub, module, STDIN, argv=["hello.wasm", str(i)]) for i in range(3)]
    ev = Events()
    w = _work(node, sub, envs, ev)
    w.prepare()
    w.run()  # returns with the journal's flush still held
    assert journal_gate.entered.wait(WAIT_S)
    assert [e[0] for e in ev.got] == ["started"] * 3
    assert log.sync._written == 0  # no receipt written before its job id is durable
    journal_gate.release.set()
    ends = ev.ends(3)
    assert [e.receipt["body"]["job"] for e in ReceiptLog(tmp_path / "r.jsonl").entries()] \
        == [ends[i][0].id for i in range(3)]


def test_work_fails_every_job_whose_id_cannot_be_made_durable(tmp_path: Path) -> None:
    node, sub = make_node(tmp_path, ReceiptLog(tmp_path / "r.jsonl"))
    node.state.journal_sync = GroupSync("test journal", failing_sync)
    envs = [make_manifest(sub, HELLO.read_bytes(), STDIN, argv=["hello.wasm", str(i)])
            for i in range(2)]
    ev = Events()
    w = _work(node, sub, envs, ev)
    w.prepare()
    w.run()
    assert all(isinstance(x, IOFailure) for x in ev.ends(2).values())
    assert list(ReceiptLog(tmp_path / "r.jsonl").entries()) == []


def test_work_fails_the_job_whose_receipt_cannot_be_made_durable(tmp_path: Path) -> None:
    node, sub = make_node(tmp_path, ReceiptLog(tmp_path / "r.jsonl",
                                               GroupSync("t", failing_sync)))
    env = make_manifest(sub, HELLO.read_bytes(), STDIN, argv=["hello.wasm"])
    ev = Events()
    w = _work(node, sub, [env], ev)
    w.prepare()
    w.run()
    assert isinstance(ev.ends(1)[0], IOFailure)


def test_work_does_not_start_a_job_once_the_submitter_is_gone(tmp_path: Path) -> None:
    log = ReceiptLog(tmp_path / "r.jsonl")
    node, sub = make_node(tmp_path, log)
    envs = [make_manifest(sub, HELLO.read_bytes(), STDIN, argv=[str(i)]) for i in range(3)]
    cancel = threading.Event()
    ev = Events()
    w = _work(node, sub, envs, ev, cancel)
    w.prepare()
    cancel.set()
    w.run()
    ends = ev.ends(3)
    assert all(isinstance(x, Interrupted) for x in ends.values())
    assert not any(e[0] == "started" for e in ev.got)
    assert list(log.entries()) == []


# -- kill -9 under batching ------------------------------------------------------------------

async def pool_many(peer: str, n: int, concurrency: int, on_receipt: Any) -> int:
    ident = Identity.generate()
    module = HELLO.read_bytes()
    todo = iter(range(n))
    from phase_core.aio.stream import Limits

    async with Pool(ident, [peer], limits=Limits(idle_timeout_s=3, keepalive_s=1)) as pool:
        async def loop() -> None:
            for i in todo:
                env = make_manifest(ident, module, STDIN, argv=["hello.wasm", str(i)])
                job = Job(env, {env["body"]["module"]: module, env["body"]["stdin"]: STDIN})
                try:
                    out = await (await pool.submit(job))
                except Exception:
                    return
                if on_receipt(out.receipt):
                    return

        await asyncio.gather(*(loop() for _ in range(concurrency)))
        return pool.stats["batches"]


def test_every_receipt_a_batching_pool_got_survives_kill_9(tmp_path: Path) -> None:
    """64 submitters on a batching Pool; SIGKILL the worker the moment the client holds
    its k-th receipt; after a restart the log holds every receipt handed out."""
    home = tmp_path / "worker"
    init_home(home)
    handed_out: list[dict[str, Any]] = []
    batches = 0
    for round_no, kill_after in enumerate((1, 30, 90)):
        w = start_node(home, "--open", "--workers=2", init=False)
        got: list[dict[str, Any]] = []
        try:
            def on_receipt(receipt: dict[str, Any], w: Any = w, k: int = kill_after,
                           got: list[dict[str, Any]] = got) -> bool:
                if len(got) < k:
                    got.append(receipt)
                    if len(got) == k:
                        os.kill(w.proc.pid, signal.SIGKILL)  # at once: no clean stop
                return len(got) >= k

            batches += run(pool_many(w.peer, 600, 64, on_receipt), timeout=180)
            assert w.proc.wait(30) == -signal.SIGKILL, f"round {round_no}: not killed"
        finally:
            w.stop()
        handed_out += got
        assert_logged_after_restart(home, handed_out, round_no)
    assert len(handed_out) == 1 + 30 + 90
    assert batches > 0  # the receipts came through batch streams


# -- the one-job path: a run that never comes ------------------------------------------------

class SilentStream:
    """A job stream whose submitter sends nothing after its offer."""

    connection = None

    def __init__(self, on_send: Any) -> None:
        self.sent: list[Any] = []
        self.on_send = on_send

    async def recv(self) -> dict[str, Any] | None:
        await asyncio.Event().wait()  # never
        return None

    async def send(self, msg: dict[str, Any]) -> None:
        self.sent.append(msg)
        self.on_send()

    def abort(self, code: int = 0) -> None:
        pass


def test_a_job_whose_run_never_comes_fails_at_its_deadline(tmp_path: Path) -> None:
    from phase_core.protocol.jobs_worker import RUN_WAIT_S, Offered, Responder

    node, sub = make_node(tmp_path, ReceiptLog(tmp_path / "r.jsonl"))
    env = make_manifest(sub, HELLO.read_bytes(), STDIN, argv=["hello.wasm"])
    clock = [1000.0]
    r = Responder(lambda: clock[0])
    ev = r.receive(offer_of(env))
    assert isinstance(ev, Offered)

    def later() -> None:  # the accept went out, and then the whole wait for run passed
        clock[0] += RUN_WAIT_S

    stream = SilentStream(later)
    run(asyncio.wait_for(node._job(sub.node_id, r, ev, stream), WAIT_S), timeout=WAIT_S + 30)
    assert [m["type"] for m in stream.sent] == ["accept", "error"]
    assert node.counters.c["jobs_failed"] == 1 and node.queued == 0 and node.running == 0

