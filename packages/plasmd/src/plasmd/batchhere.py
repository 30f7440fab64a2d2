"""The event loop's side of a batch's jobs that run here (``plasmd.batchrun``).

``plasmd.batch`` admits the jobs of a ``batch`` stream whose module and stdin the
node holds and hands them to ``run_here``: one hop to a job thread verifies and
records them all (``Work.prepare``), up to ``workers`` runners run them
(``Work.run``; a runner gives its job thread up when another submitter waits for
one, and takes one again in the round robin: ``plasmd.fair``), and the events
the threads send through the ``Mailbox`` move each job's ``Admission`` (the
node's ``queued`` / ``running`` counts) and answer each job as it ends, counted
and logged as ``Node._job`` counts and logs a job on a stream of its own.
"""

from __future__ import annotations

import asyncio
from typing import Any

from phase_core import log
from phase_core.errors import PhaseError
from phase_core.protocol import jobs
from phase_core.protocol.jobs import SendBlob
from phase_core.protocol.jobs_batch import BatchJob
from plasmd.admission import Admission
from plasmd.batchrun import Mailbox, Work
from plasmd.jobthread import Refused

__all__ = ["run_here"]


async def run_here(node: Any, peer: str, b: Any,
                   here: list[tuple[BatchJob, Admission]]) -> None:
    """Run the admitted jobs ``here`` of the batch stream ``b`` (``plasmd.batch``)
    through ``batchrun.Work``; answer each as it ends."""
    loop = asyncio.get_running_loop()
    adms = [adm for _, adm in here]  # queued → running → ended
    left = [len(here)]
    ended = asyncio.Event()

    def drain(events: list[tuple[Any, ...]]) -> None:
        for ev in events:
            adm = adms[ev[1]]
            if adm.state == "ended":
                continue
            if ev[0] == "started":
                adm.start()
                continue
            adm.end()
            left[0] -= 1
            _answer(node, peer, b, here[ev[1]][0].job, ev[2])
        b.send_soon()
        if not left[0]:
            ended.set()

    work = Work(node, peer, [(j.offer, j.run["manifest"]) for j, _ in here], b.cancel,
                Mailbox(loop, drain))

    slots = node._slots

    async def hop(fn: Any, *args: Any) -> None:
        async with slots.take(peer):
            await loop.run_in_executor(node._pool, fn, *args)

    def give_way() -> bool:  # (read on a job thread: a hint, checked again by the loop)
        return bool(slots.others_waiting(peer))

    async def runner() -> None:
        while work.todo:  # it gave way to another submitter: queue again behind it
            await hop(work.run, give_way)

    try:
        await hop(work.prepare)
        await asyncio.gather(*(runner()
                               for _ in range(min(node.config.workers, len(work.todo)))))
        await ended.wait()  # the last receipts' flush, then their answers
        await b.sent()
    finally:
        b.cancel.set()  # (a no-op once every job ended)
        for adm in adms:  # only if this task was cancelled midway (else a no-op)
            adm.end()


def _answer(node: Any, peer: str, b: Any, job_id: str, outcome: Any) -> None:
    """One job's end, counted and logged as ``Node._job`` does, queued on the batch."""
    if isinstance(outcome, Refused):
        node.counters.inc(f"rejected_{outcome.reason}")
        log.get().info("job.rejected", peer=peer, job=job_id, reason=outcome.reason,
                       stage="run")
        b.machine.job_out(job_id, jobs.reject(job_id, outcome.reason, outcome.message))
    elif isinstance(outcome, PhaseError):
        if b.cancel.is_set():
            node.note_cancelled(peer, job_id, outcome)
            return
        node.note_failed(peer, job_id, outcome)
        b.machine.job_out(job_id, jobs.error(outcome.slug, outcome.message))
    else:
        _verified, result = outcome
        ended = result.result.outcome.ended
        node.counters.inc("jobs_done")
        node.counters.inc(f"ended_{ended}")
        m = b.machine
        if not (m.job_out(job_id, {"type": "result", "job": job_id, "receipt": result.receipt})
                and m.job_out(job_id, SendBlob(result.result.stdout or b""))
                and m.job_out(job_id, SendBlob(result.result.stderr or b""))):
            node.counters.inc("jobs_orphaned")
            log.get().info("job.orphaned", peer=peer, job=job_id, error="submitter_gone",
                           message="the submitter left before the result was delivered; "
                                   "the receipt is in the log")
            return
        log.get().info("job.done", peer=peer, job=job_id, ended=ended,
                       exit_code=result.result.outcome.exit_code)
