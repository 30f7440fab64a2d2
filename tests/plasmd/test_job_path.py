"""The worker's job path: durability under group commit, blobs hashed once, and
networking that never waits on a guest.

In-process tests drive ``GroupSync``, ``ReceiptLog`` and ``Node.run_one_later`` with an
injected flush (gated by events, or failing); process tests start real workers on
127.0.0.1 and kill one with SIGKILL right after its receipts reach the client.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from phase_core import envelope, timefmt
from phase_core.canonical import content_id
from phase_core.cas import ContentStore
from phase_core.errors import DigestMismatch, IOFailure, MissingInput
from phase_core.groupsync import GroupSync
from phase_core.identity import Identity
from phase_core.protocol import jobs
from phase_core.state import StateStore
from phase_core.trust import Keyring
from plasmd.config import Config
from plasmd.node import Node, Refused
from plasmd.receiptlog import ReceiptLog
from plasmd.submit import make_manifest
from tests.conftest import script
from tests.phase_core.net.conftest import run
from tests.plasmd.conftest import EXAMPLES, HELLO, init_home, start_node

STDIN = b"Hello, World"
WAIT_S = 30  # a bound on event waits (a hang fails the test instead of blocking it)


class GatedSync:
    """An fdatasync that tells when it is entered and waits until it is released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.calls = 0

    def __call__(self, fd: int) -> None:
        self.calls += 1
        self.entered.set()
        assert self.release.wait(WAIT_S)
        os.fdatasync(fd)


def failing_sync(fd: int) -> None:
    raise OSError(5, "Input/output error")


# -- group commit ---------------------------------------------------------------------------

def test_one_flush_covers_every_writer_that_waited_behind_it(tmp_path):
    gate = GatedSync()
    log = ReceiptLog(tmp_path / "r.jsonl", GroupSync("test log", gate))
    done: list[int] = []

    def append(i: int) -> None:
        done.append(log.append({"n": i}).seq)

    first = threading.Thread(target=append, args=(0,))
    first.start()
    assert gate.entered.wait(WAIT_S)  # the leader's flush is under way (and held)
    others = [threading.Thread(target=append, args=(i,)) for i in range(1, 8)]
    for t in others:
        t.start()
    deadline = time.monotonic() + WAIT_S
    while log.sync._written < 8:  # every line is written; all wait for a flush
        assert time.monotonic() < deadline
        time.sleep(0.001)
    assert done == []  # nobody returned before a flush covering its line
    gate.release.set()
    for t in [first, *others]:
        t.join(WAIT_S)
    assert sorted(done) == list(range(8))
    assert gate.calls == 2  # the held flush, then one for the seven behind it
    assert log.sync.flushes == 2 and log.sync.covered == 8
    assert [e.seq for e in ReceiptLog(tmp_path / "r.jsonl").entries()] == list(range(8))


def test_an_append_returns_only_after_its_flush(tmp_path):
    gate = GatedSync()
    log = ReceiptLog(tmp_path / "r.jsonl", GroupSync("test log", gate))
    returned = threading.Event()
    t = threading.Thread(target=lambda: (log.append({"n": 0}), returned.set()))
    t.start()
    assert gate.entered.wait(WAIT_S)
    # the line is written (a reader sees it), the flush has not returned: nor has append
    assert (tmp_path / "r.jsonl").read_bytes().count(b"\n") == 1
    assert not returned.is_set()
    gate.release.set()
    assert returned.wait(WAIT_S)
    t.join(WAIT_S)


def test_a_failed_flush_fails_this_append_and_every_later_one(tmp_path):
    log = ReceiptLog(tmp_path / "r.jsonl", GroupSync("test log", failing_sync))
    with pytest.raises(IOFailure, match="durable"):
        log.append({"n": 0})
    with pytest.raises(IOFailure):  # no later flush may pass for the lost one
        log.append({"n": 1})


def test_the_job_journal_shares_flushes_and_still_refuses_replays(tmp_path):
    store = StateStore(tmp_path / "state.json")
    gate = GatedSync()
    store.journal_sync = GroupSync("test journal", gate)
    now = timefmt.now()
    errors: list[BaseException] = []

    def record(i: int) -> None:
        try:
            store.record_job("sub", f"job-{i}", now + 60, now)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=record, args=(i,)) for i in range(6)]
    threads[0].start()
    assert gate.entered.wait(WAIT_S)
    for t in threads[1:]:
        t.start()
    deadline = time.monotonic() + WAIT_S
    while store.journal_sync._written < 6:
        assert time.monotonic() < deadline
        time.sleep(0.001)
    gate.release.set()
    for t in threads:
        t.join(WAIT_S)
    assert errors == [] and gate.calls == 2
    again = StateStore(tmp_path / "state.json")  # a restart reads the journal
    from phase_core.errors import Replay
    with pytest.raises(Replay):
        again.record_job("sub", "job-3", now + 60, now)


# -- the per-job function, in process ---------------------------------------------------------

_MADE: list[Node] = []


@pytest.fixture(autouse=True)
def _stop_job_processes():
    """A node made here runs its guests in job processes: stop them after each test
    (a daemon does so when it drains)."""
    yield
    while _MADE:
        children = _MADE.pop()._children
        if children is not None:
            children.close()


def make_node(tmp_path: Path, receipts: Any) -> tuple[Node, Identity]:
    submitter = Identity.generate()
    cfg = Config(open=True, workers=1)
    cas = ContentStore(tmp_path / "cas")
    node = Node(identity=Identity.generate(), config=cfg, keyring=Keyring(), cas=cas,
                state=StateStore(tmp_path / "state.json"), receipts=receipts,
                home=tmp_path / "home")
    cas.put_bytes(HELLO.read_bytes())
    cas.put_bytes(STDIN)
    _MADE.append(node)
    return node, submitter


def run_one(node: Node, peer: str, offer: dict[str, Any], env: dict[str, Any]) -> Any:
    """``node.run_one_later``, waited for on this thread until the receipt is durable:
    (verified, ``JobResult``) or ``Refused``."""
    ran = node.run_one_later(peer, offer, env)
    if isinstance(ran, Refused):
        return ran
    verified, result, logged = ran
    logged.result()
    return verified, result


def offer_of(env: dict[str, Any]) -> dict[str, Any]:
    return jobs.offer_for(env, envelope.parse(env).id, HELLO.stat().st_size, len(STDIN))


def test_run_one_fails_when_the_receipt_cannot_be_made_durable(tmp_path):
    log = ReceiptLog(tmp_path / "r.jsonl", GroupSync("test log", failing_sync))
    node, sub = make_node(tmp_path, log)
    env = make_manifest(sub, HELLO.read_bytes(), STDIN, argv=["hello.wasm"])
    assert node.inputs_here(offer_of(env))
    with pytest.raises(IOFailure):
        run_one(node, sub.node_id, offer_of(env), env)
    # and the job id stays taken: the same manifest is refused as a replay
    again = run_one(node, sub.node_id, offer_of(env), env)
    assert isinstance(again, Refused) and again.reason == "replay"


class OrderedLog(ReceiptLog):
    """A receipt log that notes whether the job journal's flush was released when
    each receipt was appended."""

    def __init__(self, path: Path, journal_gate: GatedSync) -> None:
        super().__init__(path)
        self.gate = journal_gate
        self.appended_before_journal_durable = 0

    def append(self, receipt: dict[str, Any]) -> Any:
        if not self.gate.release.is_set():
            self.appended_before_journal_durable += 1
        return super().append(receipt)


def test_the_guest_runs_while_its_id_is_flushed_and_the_receipt_waits_for_it(tmp_path):
    """The job id's journal flush overlaps the guest (docs/protocol.md); the receipt
    is logged, and the result returned, only after that flush."""
    gate = GatedSync()
    log = OrderedLog(tmp_path / "r.jsonl", gate)
    node, sub = make_node(tmp_path, log)
    node.state.journal_sync = GroupSync("test journal", gate)
    env = make_manifest(sub, HELLO.read_bytes(), STDIN, argv=["hello.wasm"])
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(run_one(node, sub.node_id, offer_of(env),
                                                                env)))
    t.start()
    assert gate.entered.wait(WAIT_S)  # the journal's flush is under way, and held
    deadline = time.monotonic() + WAIT_S
    while node.counters.c["wasm_runs"] < 1:  # the guest starts meanwhile
        assert time.monotonic() < deadline, "the guest waited for the journal flush"
        time.sleep(0.001)
    assert t.is_alive() and out == []
    gate.release.set()
    t.join(WAIT_S)
    (_, result), = out
    assert result.result.stdout == b"dlroW ,olleH"
    assert log.appended_before_journal_durable == 0
    assert [e.receipt for e in ReceiptLog(tmp_path / "r.jsonl").entries()] == [result.receipt]


def test_the_job_thread_does_not_wait_for_the_flushes_the_answer_waits_for(tmp_path):
    """``run_one_later`` returns once the guest has run; its ``logged`` resolves only
    after the job id's journal line, and then the receipt's log entry, are durable
    (the receipt is not even written before the id is durable)."""
    journal_gate, receipt_gate = GatedSync(), GatedSync()
    log = ReceiptLog(tmp_path / "r.jsonl", GroupSync("test log", receipt_gate))
    node, sub = make_node(tmp_path, log)
    node.state.journal_sync = GroupSync("test journal", journal_gate)
    env = make_manifest(sub, HELLO.read_bytes(), STDIN, argv=["hello.wasm"])
    # on this thread: it must come back while both flushes are held
    verified, result, logged = node.run_one_later(sub.node_id, offer_of(env), env)
    assert result.result.stdout == b"dlroW ,olleH" and verified.id == envelope.parse(env).id
    assert journal_gate.entered.wait(WAIT_S) and not logged.done()
    assert log.sync._written == 0  # the receipt waits for its job id to be durable
    journal_gate.release.set()
    assert receipt_gate.entered.wait(WAIT_S)  # now appended, its flush held
    assert not logged.done()
    receipt_gate.release.set()
    assert logged.result(WAIT_S) is None
    assert [e.receipt for e in ReceiptLog(tmp_path / "r.jsonl").entries()] == [result.receipt]


def test_a_failed_receipt_flush_fails_the_later_job_too(tmp_path):
    node, sub = make_node(tmp_path, ReceiptLog(tmp_path / "r.jsonl",
                                               GroupSync("test log", failing_sync)))
    env = make_manifest(sub, HELLO.read_bytes(), STDIN, argv=["hello.wasm"])
    _, _, logged = node.run_one_later(sub.node_id, offer_of(env), env)
    with pytest.raises(IOFailure, match="durable"):
        logged.result(WAIT_S)


def test_a_failed_journal_flush_fails_the_job_and_logs_no_receipt(tmp_path):
    log = ReceiptLog(tmp_path / "r.jsonl")
    node, sub = make_node(tmp_path, log)
    node.state.journal_sync = GroupSync("test journal", failing_sync)
    env = make_manifest(sub, HELLO.read_bytes(), STDIN, argv=["hello.wasm"])
    with pytest.raises(IOFailure, match="durable"):
        run_one(node, sub.node_id, offer_of(env), env)
    assert list(ReceiptLog(tmp_path / "r.jsonl").entries()) == []
    other = make_manifest(sub, HELLO.read_bytes(), STDIN, argv=["hello.wasm"])
    with pytest.raises(IOFailure):  # and no later job runs past the lost flush
        run_one(node, sub.node_id, offer_of(other), other)


def test_run_one_runs_verifies_and_refuses_what_it_must(tmp_path):
    log = ReceiptLog(tmp_path / "r.jsonl")
    node, sub = make_node(tmp_path, log)
    env = make_manifest(sub, HELLO.read_bytes(), STDIN, argv=["hello.wasm"])
    _, result = run_one(node, sub.node_id, offer_of(env), env)
    assert result.result.stdout == b"dlroW ,olleH"
    assert [e.receipt for e in ReceiptLog(tmp_path / "r.jsonl").entries()] == [result.receipt]
    stranger = Identity.generate()  # the manifest must be signed by the submitting peer
    other = make_manifest(sub, HELLO.read_bytes(), STDIN, argv=["hello.wasm"])
    refused = run_one(node, stranger.node_id, offer_of(other), other)
    assert isinstance(refused, Refused) and refused.reason == "invalid_request"
    assert "signature" in refused.message
    third = make_manifest(sub, HELLO.read_bytes(), STDIN, argv=["hello.wasm"])
    offer = dict(offer_of(third), limits={**third["body"]["limits"], "fuel": 1})
    refused = run_one(node, sub.node_id, offer, third)  # not the job that was offered
    assert isinstance(refused, Refused) and refused.reason == "invalid_request"


def test_stdin_is_hashed_once_and_again_when_its_file_changes(tmp_path):
    node, sub = make_node(tmp_path, ReceiptLog(tmp_path / "r.jsonl"))
    for _ in range(3):
        env = make_manifest(sub, HELLO.read_bytes(), STDIN, argv=["hello.wasm"])
        _, result = run_one(node, sub.node_id, offer_of(env), env)
        assert result.result.stdout == b"dlroW ,olleH"
    assert node.blobs.hashed == 1
    path = node.cas.path_for(content_id(STDIN))
    os.chmod(path, 0o600)
    path.write_bytes(b"Hello, Earth")  # same size, new bytes: a changed file
    env = make_manifest(sub, HELLO.read_bytes(), STDIN, argv=["hello.wasm"])
    with pytest.raises(MissingInput):
        run_one(node, sub.node_id, offer_of(env), env)
    assert node.blobs.hashed == 2 and not path.exists()  # quarantined, never run


def test_stdin_edited_in_place_is_never_run_under_its_old_id(tmp_path):
    # an edit that keeps the size and puts the modification time back is not seen by
    # the file-identity check (docs/threat-model.md); the bytes the guest would get are
    # hashed as they are handed over, so the job fails and the blob is quarantined
    node, sub = make_node(tmp_path, ReceiptLog(tmp_path / "r.jsonl"))
    env = make_manifest(sub, HELLO.read_bytes(), STDIN, argv=["hello.wasm"])
    run_one(node, sub.node_id, offer_of(env), env)
    path = node.cas.path_for(content_id(STDIN))
    st = path.stat()
    os.chmod(path, 0o600)
    with open(path, "r+b") as f:
        f.write(b"Hello, Earth")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.chmod(path, st.st_mode)
    env = make_manifest(sub, HELLO.read_bytes(), STDIN, argv=["hello.wasm"])
    with pytest.raises(DigestMismatch, match="changed on disk"):
        run_one(node, sub.node_id, offer_of(env), env)
    assert not path.exists()  # quarantined: the next job fetches it again
    assert len(list(ReceiptLog(tmp_path / "r.jsonl").entries())) == 1


# -- real workers -----------------------------------------------------------------------------

async def submit_many(w_port: int, node_id: str, n: int, concurrency: int,
                      on_receipt: Any) -> list[dict[str, Any]]:
    """``n`` hello jobs over one connection, ``concurrency`` at a time; ``on_receipt``
    is called with each verified receipt as soon as the client has it."""
    from phase_core.aio.quic import Client
    from phase_core.protocol.jobs_client import Submission
    from plasmd.blobs import serve_get
    from plasmd.submit import _exchange

    ident = Identity.generate()
    module = HELLO.read_bytes()
    blobs = {content_id(module): module, content_id(STDIN): STDIN}

    async def serve(peer: str, stream: Any) -> None:
        msg = await stream.recv()
        if msg is not None and msg.get("type") == "get":
            await serve_get(stream, msg, blobs.get)

    from phase_core.aio.stream import Limits

    # a short idle timeout: once the worker is killed, the jobs in flight fail fast
    conn = await Client(ident, Limits(idle_timeout_s=3, keepalive_s=1), handler=serve
                        ).connect("127.0.0.1", w_port, expected_node_id=node_id)
    got: list[dict[str, Any]] = []
    todo = iter(range(n))

    async def loop() -> None:
        for _ in todo:
            env = make_manifest(ident, module, STDIN, argv=["hello.wasm"])
            sub = Submission(time.monotonic, env, envelope.parse(env).id,
                             {c: len(d) for c, d in blobs.items()}, timeout_s=30)
            try:
                out = await _exchange(conn, sub)
            except Exception:
                return
            got.append(out.receipt)
            if on_receipt(out.receipt):
                return

    await asyncio.gather(*(loop() for _ in range(concurrency)))
    await conn.close()
    return got


def logged_receipts(home: Path) -> list[dict[str, Any]]:
    r = subprocess.run([script("plasmd"), "receipts", "--verify", f"--home={home}"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr  # the chain and every signature check out
    return [e.receipt for e in ReceiptLog(home / "receipts.jsonl").entries()]


def assert_logged_after_restart(home: Path, handed_out: list[dict[str, Any]],
                                round_no: int) -> None:
    """Restart the killed worker (the start repairs and checks its log), stop it, and
    check that every receipt a client was handed is in the verified log, and its job
    id in the replay journal (so the job is refused if it is sent again)."""
    r = start_node(home, "--open", init=False)
    r.stop()
    logged = {json.dumps(x, sort_keys=True) for x in logged_receipts(home)}
    missing = [x for x in handed_out if json.dumps(x, sort_keys=True) not in logged]
    assert missing == [], f"round {round_no}: {len(missing)} receipts lost"
    journal = (home / "state.json.jobs").read_text().splitlines()
    recorded = {json.loads(line)["j"] for line in journal if line}
    unrecorded = [x for x in handed_out if x["body"]["job"] not in recorded]
    assert unrecorded == [], f"round {round_no}: {len(unrecorded)} job ids not in the journal"


def test_every_receipt_a_client_got_survives_kill_9(tmp_path):
    """Under concurrency (group commit at work), SIGKILL the worker the moment the
    client holds a receipt; after a restart the log holds every receipt handed out."""
    home = tmp_path / "worker"
    init_home(home)
    handed_out: list[dict[str, Any]] = []
    for round_no, kill_after in enumerate((1, 13, 40)):
        w = start_node(home, "--open", "--workers=2", init=False)
        got: list[dict[str, Any]] = []
        try:
            def on_receipt(receipt: dict[str, Any], w: Any = w, k: int = kill_after,
                           got: list[dict[str, Any]] = got) -> bool:
                got.append(receipt)
                if len(got) == k:
                    os.kill(w.proc.pid, signal.SIGKILL)  # at once: no clean stop
                return len(got) >= k

            run(submit_many(w.port, w.node_id, 400, 16, on_receipt), timeout=120)
            assert w.proc.wait(30) == -signal.SIGKILL, f"round {round_no}: not killed"
        finally:
            w.stop()
        handed_out += got
        assert_logged_after_restart(home, handed_out, round_no)
    assert len(handed_out) >= 1 + 13 + 40


def test_networking_is_served_while_the_only_guest_slot_spins(tmp_path):
    """One worker slot, taken by a guest that spins until its fence: another
    connection's ping is answered, and a node record served, while it runs."""
    from tests.plasmd.test_node import reconfigure

    w = start_node(tmp_path / "worker", "--open", "--workers=1")
    reconfigure(w, "fuel = 10000000000", "fuel = 1000000000000")  # raise the ceiling
    client = tmp_path / "client"
    init_home(client)
    spin = subprocess.Popen([script("plasmd"), "submit", f"--home={client}",
                             str(EXAMPLES / "spin.wasm"), f"--peer={w.peer}", "--timeout=60",
                             # fuel for longer than the submitter's idle timeout (10 s), so
                             # the guest is still running when its going away is noticed
                             "--fuel=1000000000000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        from plasmd import control
        deadline = time.monotonic() + WAIT_S
        while control.query_home(w.home)["jobs"]["running"] != 1:
            assert time.monotonic() < deadline, "the spin did not start"
            time.sleep(0.02)

        async def ping() -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
            from phase_core.aio import quic
            conn = await quic.connect("127.0.0.1", w.port, Identity.generate(),
                                      expected_node_id=w.node_id)
            s = await conn.open_stream()
            await s.send({"type": "ping", "nonce": "n1"})
            pong = await s.recv()
            s.finish()
            s2 = await conn.open_stream()
            await s2.send({"type": "get_node_record"})
            rec = await s2.recv()
            s2.finish()
            await conn.close()
            return pong, rec

        pong, rec = run(ping())
        assert pong == {"type": "pong", "nonce": "n1"}
        assert rec is not None and rec["type"] == "node_record"
        # the guest was still running when both answers came: nothing waited for it
        assert spin.poll() is None
        assert control.query_home(w.home)["jobs"]["running"] == 1
    finally:
        spin.kill()  # the submitter goes away: the worker stops the guest
        spin.wait(30)
    deadline = time.monotonic() + WAIT_S
    while control.query_home(w.home)["counters"].get("jobs_cancelled", 0) != 1:
        assert time.monotonic() < deadline, "the spin was not stopped"
        time.sleep(0.02)
    w.stop()


def test_jobs_beyond_the_workers_wait_queued_until_a_job_thread_frees(tmp_path):
    """A node has ``workers`` job threads, as many as guest slots (no job thread
    waits for a flush, so more would only contend for the GIL): a job beyond them
    waits queued, and its guest starts only when a job thread frees."""
    from plasmd import control

    w = start_node(tmp_path / "worker", "--open", "--workers=1")
    client = tmp_path / "client"
    init_home(client)

    def spin() -> subprocess.Popen[bytes]:
        return subprocess.Popen([script("plasmd"), "submit", f"--home={client}",
                                 str(EXAMPLES / "spin.wasm"), f"--peer={w.peer}",
                                 "--timeout=60", "--ephemeral-key"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def wait_status(cond: Any, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + WAIT_S
        while not cond(st := control.query_home(w.home)):
            assert time.monotonic() < deadline, what
            time.sleep(0.02)
        return st

    first = spin()
    second = None
    try:
        wait_status(lambda st: st["counters"].get("wasm_runs") == 1, "the first guest runs")
        second = spin()
        st = wait_status(lambda st: st["jobs"]["queued"] == 1, "the second job is admitted")
        assert st["jobs"]["running"] == 1 and st["counters"]["wasm_runs"] == 1
        time.sleep(0.5)  # and it stays queued while the first guest spins
        st = control.query_home(w.home)
        assert st["jobs"]["queued"] == 1 and st["counters"]["wasm_runs"] == 1
        first.kill()  # the first submitter goes away: its guest stops, the slot frees
        first.wait(30)
        wait_status(lambda st: st["counters"].get("wasm_runs") == 2, "the second guest runs")
    finally:
        for p in (first, second):
            if p is not None:
                p.kill()
                p.wait(30)
        w.stop()


def test_receipts_linger_only_while_jobs_are_queued_behind_a_running_guest(tmp_path,
                                                                           monkeypatch):
    import plasmd.node

    monkeypatch.setattr(plasmd.node, "RECEIPT_LINGER_S", 3600)  # a linger would hang
    log = ReceiptLog(tmp_path / "r.jsonl")
    node, sub = make_node(tmp_path, log)
    assert not node._receipts_coming()
    node.queued = 1  # a job waits, but no guest runs: nothing is on its way
    assert not node._receipts_coming()
    with node._guests.slot("someone else"):
        assert node._receipts_coming()
    node.queued = 0
    # a lone job's receipt is flushed at once, with an hour's linger set
    env = make_manifest(sub, HELLO.read_bytes(), STDIN, argv=["hello.wasm"])
    ran = node.run_one_later(sub.node_id, offer_of(env), env)
    assert not isinstance(ran, Refused)
    ran[2].result(WAIT_S)
    assert [e.receipt for e in ReceiptLog(tmp_path / "r.jsonl").entries()] == [ran[1].receipt]
