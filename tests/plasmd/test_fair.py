"""plasmd.fair: waiting jobs are served round-robin per submitter, none starves, a
cancelled waiter leaves the line, and the slot counts hold."""

from __future__ import annotations

import asyncio
import threading

import pytest

from phase_core.errors import Interrupted
from plasmd.fair import FairGate, FairQueue, FairSlots


def drain(q: FairQueue[str]) -> list[str]:
    out = []
    while len(q):
        out.append(q.pop()[1])
    return out


def test_round_robin_order() -> None:
    q: FairQueue[str] = FairQueue()
    for i in range(40):
        q.push("A", f"a{i}")
    q.push("B", "b0")
    q.push("C", "c0")
    q.push("B", "b1")
    got = drain(q)
    # B and C wait behind one of A's jobs each, not behind A's backlog
    assert got[:6] == ["a0", "b0", "c0", "a1", "b1", "a2"]
    assert got[6:] == [f"a{i}" for i in range(3, 40)]


def test_no_starvation_and_fifo_within_a_key() -> None:
    q: FairQueue[str] = FairQueue()
    served: dict[str, list[str]] = {"A": [], "B": []}
    n = 0
    for _ in range(50):  # A keeps adding two for every one served; B has a few
        q.push("A", f"a{n}")
        q.push("A", f"a{n + 1}")
        n += 2
        if len(served["B"]) + q.waiting("B") < 5:
            q.push("B", f"b{len(served['B']) + q.waiting('B')}")
        key, item = q.pop()
        served[key].append(item)
    assert served["B"] == [f"b{i}" for i in range(5)]  # all served, in order
    assert served["A"] == [f"a{i}" for i in range(len(served["A"]))]
    assert q.waiting("B") == 0


def test_one_job_at_a_time_does_not_pass_a_backlog() -> None:
    """A key that keeps exactly one job waiting (and so keeps coming back new)
    alternates with a backlogged key; it never jumps it."""
    q: FairQueue[str] = FairQueue()
    for i in range(10):
        q.push("A", f"a{i}")
    q.push("C", "c0")
    served = []
    for i in range(1, 9):
        key, item = q.pop()
        served.append(item)
        if key == "C":
            q.push("C", f"c{i}")
    assert served == ["a0", "c0", "a1", "c2", "a2", "c4", "a3", "c6"]


def test_a_newcomer_goes_before_a_backlogs_next_job() -> None:
    q: FairQueue[str] = FairQueue()
    for i in range(5):
        q.push("A", f"a{i}")
    assert q.pop() == ("A", "a0")
    q.push("B", "b0")
    assert drain(q) == ["b0", "a1", "a2", "a3", "a4"]
    q.charge("A")  # A took a free slot without waiting
    q.push("A", "a5")
    q.push("B", "b1")
    assert drain(q) == ["b1", "a5"]


def test_remove_a_waiter() -> None:
    q: FairQueue[str] = FairQueue()
    q.push("A", "a0")
    q.push("B", "b0")
    q.push("A", "a1")
    assert q.remove("B", "b0")
    assert not q.remove("B", "b0")
    assert not q.others_waiting("A") and q.others_waiting("B")
    assert len(q) == 2 and drain(q) == ["a0", "a1"]
    with pytest.raises(IndexError):
        q.pop()


def test_slots_hand_over_round_robin_and_cancel() -> None:
    async def main() -> tuple[list[str], int]:
        slots = FairSlots(1)
        order: list[str] = []
        release = asyncio.Event()

        async def job(key: str, name: str) -> None:
            async with slots.take(key):
                order.append(name)
                if name == "a0":
                    await release.wait()

        first = asyncio.create_task(job("A", "a0"))
        await asyncio.sleep(0)
        tasks = [asyncio.create_task(job("A", f"a{i}")) for i in range(1, 6)]
        gone = asyncio.create_task(job("C", "c0"))
        tasks.append(asyncio.create_task(job("B", "b0")))
        await asyncio.sleep(0)
        assert len(slots.queue) == 7 and slots.free == 0
        gone.cancel()  # a queued job cancelled: it leaves the line, never runs
        await asyncio.gather(gone, return_exceptions=True)
        assert len(slots.queue) == 6
        release.set()
        await asyncio.gather(first, *tasks)
        return order, slots.free

    order, free = asyncio.run(main())
    # a0 took the free slot: the newcomer B goes before A's next job
    assert order == ["a0", "b0", "a1", "a2", "a3", "a4", "a5"]
    assert free == 1  # every slot came back


def test_gate_threads_round_robin_and_cancel() -> None:
    gate = FairGate(1)
    order: list[str] = []
    hold = threading.Event()
    entered = threading.Event()

    def job(key: str, name: str, cancel: threading.Event | None = None) -> None:
        try:
            with gate.slot(key, cancel):
                order.append(name)
                if name == "a0":
                    entered.set()
                    hold.wait()
        except Interrupted:
            order.append(f"cancelled {name}")

    threads = [threading.Thread(target=job, args=("A", "a0"))]
    threads[0].start()
    assert entered.wait(60)
    cancel = threading.Event()
    for i, (key, name) in enumerate([("A", "a1"), ("A", "a2"), ("C", "c0"), ("B", "b0")]):
        t = threading.Thread(target=job, args=(key, name, cancel if key == "C" else None))
        t.start()
        threads.append(t)
        while gate.waiting() < i + 1:  # each in line before the next arrives
            threading.Event().wait(0.001)
    cancel.set()
    while gate.waiting() > 3:  # C left the line
        threading.Event().wait(0.001)
    hold.set()
    for t in threads:
        t.join(60)
    assert order == ["a0", "cancelled c0", "b0", "a1", "a2"]
    assert gate.waiting() == 0
    with gate.slot("X"):  # the slot came back
        pass
