"""Flushes shared with a flusher thread and with a whole batch: ``GroupSync.later``,
``ReceiptLog.append_later`` and ``StateStore.record_jobs`` /
``begin_record_jobs`` (the parts
``plasmd.batchrun`` stands on), with gated, counting or failing flushes."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest

from phase_core import timefmt
from phase_core.errors import IOFailure, Replay
from phase_core.groupsync import GroupSync
from phase_core.state import StateStore
from plasmd import receiptlog
from plasmd.receiptlog import Entry, ReceiptLog
from tests.plasmd.test_batch_run import CountingSync
from tests.plasmd.test_job_path import WAIT_S, GatedSync, failing_sync

# -- the flusher thread ---------------------------------------------------------------------

def test_later_calls_back_only_after_the_flush_that_covers_it(tmp_path: Path) -> None:
    gate = GatedSync()
    sync = GroupSync("test", gate)
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT)
    called: list[Any] = []
    done = threading.Event()
    try:
        os.write(fd, b"a\n")
        sync.later(fd, sync.ticket(), lambda err: (called.append(err), done.set()))
        assert gate.entered.wait(WAIT_S)  # the flusher's flush is under way (and held)
        os.write(fd, b"b\n")
        t2 = sync.ticket()
        second = threading.Event()
        sync.later(fd, t2, lambda err: (called.append(err), second.set()))
        assert not done.is_set() and called == []  # nothing before the flush returns
        gate.release.set()
        assert done.wait(WAIT_S) and second.wait(WAIT_S)
        assert called == [None, None] and sync._synced >= t2
    finally:
        os.close(fd)


def test_later_reports_a_failed_flush_to_every_waiter(tmp_path: Path) -> None:
    sync = GroupSync("test", failing_sync)
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT)
    got: list[Any] = []
    done = threading.Event()
    try:
        os.write(fd, b"a\n")
        sync.later(fd, sync.ticket(), lambda err: (got.append(err), done.set()))
        assert done.wait(WAIT_S)
        assert isinstance(got[0], IOFailure)
        with pytest.raises(IOFailure):  # and later writers fail too
            sync.wait(fd, sync.ticket())
    finally:
        os.close(fd)


def test_append_later_hands_the_entry_on_only_once_durable(tmp_path: Path) -> None:
    gate = GatedSync()
    log = ReceiptLog(tmp_path / "r.jsonl", GroupSync("test log", gate))
    got: list[Any] = []
    done = threading.Event()
    log.append_later({"n": 0}, lambda e: (got.append(e), done.set()))
    assert gate.entered.wait(WAIT_S)
    assert (tmp_path / "r.jsonl").read_bytes().count(b"\n") == 1  # written, not flushed
    assert not done.is_set()
    gate.release.set()
    assert done.wait(WAIT_S)
    assert isinstance(got[0], Entry) and got[0].seq == 0
    assert [e.receipt for e in ReceiptLog(tmp_path / "r.jsonl").entries()] == [{"n": 0}]


def test_the_head_is_rewritten_once_per_burst_and_names_its_last_entry(tmp_path: Path,
                                                                       monkeypatch) -> None:
    # the head is a hint (a start adopts the durable entries past it): under load it is
    # rewritten at least every HEAD_EVERY entries, and once the burst ends it names the last
    gate = GatedSync()
    log = ReceiptLog(tmp_path / "r.jsonl", GroupSync("test log", gate))
    gate.release.set()
    log.append({"n": -1})  # the head file exists (its first write is made durable)
    gate.release.clear()
    gate.entered.clear()
    heads: list[int] = []
    write_head = log._write_head
    monkeypatch.setattr(log, "_write_head",
                        lambda seq, h, durable=True: (heads.append(seq),
                                                      write_head(seq, h, durable=durable)))
    done = threading.Semaphore(0)
    n = 3 * receiptlog.HEAD_EVERY + 5
    log.append_later({"n": 0}, lambda e: done.release())
    assert gate.entered.wait(WAIT_S)  # its flush is held: the rest is written meanwhile
    for i in range(1, n):
        log.append_later({"n": i}, lambda e: done.release())
    gate.release.set()
    for _ in range(n):
        assert done.acquire(timeout=WAIT_S)
    assert heads and heads[-1] == n and len(heads) < n // 8
    assert all(b - a <= receiptlog.HEAD_EVERY for a, b in zip([0, *heads[:-1]], heads, strict=True))
    assert ReceiptLog(tmp_path / "r.jsonl").count == n + 1


# -- the journal: one append, one flush ------------------------------------------------------

def test_record_jobs_shares_one_flush_and_refuses_a_replay_alone(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.json")
    counting = CountingSync()
    store.journal_sync = GroupSync("test journal", counting)
    now = timefmt.now()
    store.record_job("sub", "old", now + 60, now)
    assert counting.calls == 1
    errs = store.record_jobs("sub", [("a", now + 60), ("old", now + 60), ("b", now + 60),
                                     ("a", now + 60)], now)
    assert counting.calls == 2  # one flush for the whole call
    assert errs[0] is None and errs[2] is None
    assert isinstance(errs[1], Replay) and isinstance(errs[3], Replay)
    again = StateStore(tmp_path / "state.json")  # a restart reads the journal
    assert [e is None for e in again.record_jobs("sub", [("a", now + 60), ("b", now + 60),
                                                        ("c", now + 60)], now)] \
        == [False, False, True]


def test_begin_record_jobs_refuses_a_replay_at_once_and_tells_when_durable(
        tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.json")
    gate = GatedSync()
    store.journal_sync = GroupSync("test journal", gate)
    now = timefmt.now()
    errs, pending = store.begin_record_jobs("sub", [("a", now + 60), ("a", now + 60),
                                                    ("b", now + 60)], now)
    assert errs[0] is None and isinstance(errs[1], Replay) and errs[2] is None
    assert gate.entered.wait(WAIT_S)  # one flush for the call, held
    told: list[Any] = []
    pending.then(lambda failure: told.append(("first", failure)))
    pending.then(lambda failure: 1 / 0)  # a caller's bug: the others are still told
    third = threading.Event()  # (``wait`` returns as the callbacks start, not after)
    pending.then(lambda failure: (told.append(("third", failure)), third.set()))
    assert told == []
    again, _ = store.begin_record_jobs("sub", [("b", now + 60)], now)
    assert isinstance(again[0], Replay)  # refused before the flush is done
    gate.release.set()
    pending.wait()
    assert third.wait(WAIT_S)
    assert told == [("first", None), ("third", None)]
    pending.then(lambda failure: told.append(("late", failure)))  # done: called at once
    assert told[-1] == ("late", None)
    assert [e is None for e in StateStore(tmp_path / "state.json").record_jobs(
        "sub", [("a", now + 60), ("b", now + 60), ("c", now + 60)], now)] \
        == [False, False, True]


def test_a_failing_callback_does_not_stop_the_flusher(tmp_path: Path) -> None:
    sync = GroupSync("test", CountingSync())
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT)
    done = threading.Event()

    def bad(err: Any) -> None:
        raise RuntimeError("a bug in a caller")

    try:
        os.write(fd, b"a\n")
        sync.later(fd, sync.ticket(), bad)
        os.write(fd, b"b\n")
        sync.later(fd, sync.ticket(), lambda err: done.set())
        assert done.wait(WAIT_S)
    finally:
        os.close(fd)


# -- the linger: one flush for the receipts known to be coming ------------------------------

class Coming:
    """``coming()`` for ``GroupSync.linger``: says ``more``, and notes each time it is asked."""

    def __init__(self, more: bool) -> None:
        self.more = more
        self.asked = threading.Event()

    def __call__(self) -> bool:
        self.asked.set()
        return self.more


def test_the_flusher_lingers_while_more_writes_are_coming(tmp_path: Path) -> None:
    counting = CountingSync()
    sync = GroupSync("test", counting)
    # more are coming until three lines wait (asked under the flusher's lock, so the
    # answer does not depend on how the threads are scheduled)
    asked = threading.Event()

    def coming() -> bool:
        asked.set()
        return len(sync._later) < 3

    sync.linger(3600, coming)  # bounded only by coming() here
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT)
    done = [threading.Event() for _ in range(3)]
    try:
        os.write(fd, b"a\n")
        sync.later(fd, sync.ticket(), lambda err: done[0].set())
        assert asked.wait(WAIT_S)  # the flusher holds the first line back
        os.write(fd, b"b\n")
        sync.later(fd, sync.ticket(), lambda err: done[1].set())
        assert not done[0].is_set() and counting.calls == 0
        os.write(fd, b"c\n")  # the last one comes: the flusher flushes all three
        sync.later(fd, sync.ticket(), lambda err: done[2].set())
        assert all(d.wait(WAIT_S) for d in done)
        assert counting.calls == 1 and sync.flushes == 1 and sync.covered == 3
    finally:
        os.close(fd)


def test_a_write_with_nothing_coming_is_flushed_at_once(tmp_path: Path) -> None:
    sync = GroupSync("test", CountingSync())
    coming = Coming(False)
    sync.linger(3600, coming)  # an hour: a linger here would fail the test
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT)
    done = threading.Event()
    try:
        os.write(fd, b"a\n")
        sync.later(fd, sync.ticket(), lambda err: done.set())
        assert done.wait(WAIT_S) and coming.asked.is_set()
    finally:
        os.close(fd)


def test_the_linger_is_bounded_even_if_more_is_always_coming(tmp_path: Path) -> None:
    sync = GroupSync("test", CountingSync())
    sync.linger(0.05, Coming(True))
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT)
    done = threading.Event()
    try:
        os.write(fd, b"a\n")
        sync.later(fd, sync.ticket(), lambda err: done.set())
        assert done.wait(WAIT_S)
        assert sync.flushes == 1
    finally:
        os.close(fd)
