"""Guests run in job processes, children of the node (docs/architecture.md, "Job
processes"): real nodes on 127.0.0.1, real child processes, real signals.

What each test shows: the guests really run outside the node's process; a job process
that dies takes only its own job with it and is replaced; a cancel stops a guest
without killing its process; Ctrl-C to the whole process group lets the node finish
its jobs; no job process outlives a node killed outright; and the pipe's frames are
parsed under caps.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from phase_core.errors import DigestMismatch, InternalError, Interrupted, MissingInput
from phase_core.limits import DEFAULT_LIMITS
from plasmd import jobproc
from tests.conftest import script
from tests.plasmd.conftest import HELLO, init_home, start_node, submit
from tests.plasmd.test_reliability import SPIN, finish, start_submit, status, wait_for


def maps_wasmtime(pid: int) -> bool:
    """The process has wasmtime's library mapped (a job process loads it as it starts)."""
    return "wasmtime" in Path(f"/proc/{pid}/maps").read_text()


def ran_a_guest(pid: int) -> bool:
    """A job process that never ran a guest has two threads (one for its jobs, one
    for cancels); the first guest starts the engine's own (its epoch ticker, the
    output collectors)."""
    return len(list(Path(f"/proc/{pid}/task").iterdir())) > 2


def stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (None once it is gone):
    [0] the state, [1] the parent's pid, [11] and [12] user and system CPU ticks."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return None


def parent_of(pid: int) -> int:
    f = stat_fields(pid)
    assert f is not None, f"process {pid} is gone"
    return int(f[1])


def alive(pid: int) -> bool:
    f = stat_fields(pid)
    return f is not None and f[0] != "Z"


def test_guests_run_in_job_processes_not_in_the_node(node_factory, tmp_path):
    w = node_factory("worker", "--open", "--workers=2")
    client = tmp_path / "client"
    for i in range(3):
        r = submit(client, w.peer, HELLO, stdin=f"in a child {i}".encode(), tmp=tmp_path)
        assert r.returncode == 0 and r.stdout == f"{i} dlihc a ni".encode(), r.stderr
    procs = status(w)["job_processes"]
    assert procs["count"] == 2 and len(procs["pids"]) == 2 and procs["restarts"] == 0
    for pid in procs["pids"]:
        assert parent_of(pid) == w.proc.pid
    # the engine is loaded by the children, never by the node itself; and jobs one
    # after another went to the same child (the last one idle), the other stayed asleep
    assert all(maps_wasmtime(pid) for pid in procs["pids"])
    assert not maps_wasmtime(w.proc.pid)
    assert [ran_a_guest(pid) for pid in procs["pids"]].count(True) == 1


def test_threads_when_the_config_says_so(node_factory, tmp_path):
    w = node_factory("worker", "--open", env={"PHASE_JOB_PROCESSES": "false"})
    r = submit(tmp_path / "client", w.peer, HELLO, stdin=b"here", tmp=tmp_path)
    assert r.returncode == 0 and r.stdout == b"ereh", r.stderr
    assert status(w)["job_processes"] is None
    assert maps_wasmtime(w.proc.pid)


def test_a_job_process_killed_mid_job_fails_only_that_job(node_factory, tmp_path):
    w = node_factory("worker", "--open", "--workers=2")
    client = tmp_path / "client"
    init_home(client)
    before = set(status(w)["job_processes"]["pids"])
    spin = start_submit(client, w.peer, SPIN, "--timeout=20")
    wait_for(lambda: status(w)["jobs"]["running"] == 1, what="the spin runs")
    victim = spinning(before)
    os.kill(victim, signal.SIGKILL)
    rc, out, err = finish(spin)
    assert rc != 0 and out == b"", err
    assert b"job process" in err and b"SIGKILL" in err, err
    # the node is healthy: the next jobs run, and the dead child was replaced
    for i in range(3):
        r = submit(client, w.peer, HELLO, stdin=f"after {i}".encode(), tmp=tmp_path)
        assert r.returncode == 0 and r.stdout == f"{i} retfa".encode(), r.stderr
    st = status(w)
    assert st["job_processes"]["restarts"] == 1
    assert victim not in st["job_processes"]["pids"] and len(st["job_processes"]["pids"]) == 2
    assert st["counters"]["jobs_failed"] == 1
    ended = [e for e in w.logs() if e.get("event") == "job_process.ended"]
    assert len(ended) == 1 and ended[0]["pid"] == victim and "SIGKILL" in ended[0]["how"]


def cpu_ticks(pid: int) -> int:
    f = stat_fields(pid)
    return 0 if f is None else int(f[11]) + int(f[12])


def spinning(pids: set[int] | list[int], timeout: float = 30) -> int:
    """The one child whose CPU time grows by a third of the wall time (its guest
    spins), while the others stay idle; by CPU gained, not spent, since starting a
    child (importing the engine) costs CPU too."""
    deadline = time.monotonic() + timeout
    while True:
        t0 = {p: cpu_ticks(p) for p in pids}
        time.sleep(0.6)
        busy = [p for p in pids if cpu_ticks(p) - t0[p] >= 20]
        if len(busy) == 1:
            return busy[0]
        assert time.monotonic() < deadline, f"no single spinning child: {busy}"


def test_a_cancelled_guest_stops_without_its_process_dying(node_factory, tmp_path):
    w = node_factory("worker", "--open", "--workers=1")
    client = tmp_path / "client"
    init_home(client)
    (child,) = status(w)["job_processes"]["pids"]
    spin = start_submit(client, w.peer, SPIN, "--timeout=20")
    wait_for(lambda: status(w)["jobs"]["running"] == 1, what="the spin runs")
    assert spinning([child]) == child
    spin.send_signal(signal.SIGINT)  # the client closes its stream: the node cancels
    assert finish(spin)[0] == 130
    wait_for(lambda: status(w)["counters"].get("jobs_cancelled") == 1,
             what="the node cancels the job")
    wait_for(lambda: status(w)["jobs"]["running"] == 0)
    st = status(w)
    assert st["job_processes"] == {"count": 1, "pids": [child], "restarts": 0}
    r = submit(client, w.peer, HELLO, stdin=b"same child", tmp=tmp_path)
    assert r.returncode == 0 and r.stdout == b"dlihc emas", r.stderr
    assert status(w)["job_processes"]["pids"] == [child]


def test_ctrl_c_to_the_process_group_lets_the_running_job_finish(tmp_path):
    """A terminal's Ctrl-C reaches the node and its job processes alike; the children
    ignore it, so the node drains: the running job ends with its receipt."""
    home = tmp_path / "worker"
    init_home(home)
    w = start_node(home, "--open", "--workers=1", prefix=("setsid",))
    try:
        client = tmp_path / "client"
        init_home(client)
        (child,) = status(w)["job_processes"]["pids"]
        spin = start_submit(client, w.peer, SPIN, "--timeout=3", "--json")
        wait_for(lambda: status(w)["jobs"]["running"] == 1, what="the spin runs")
        os.killpg(os.getpgid(w.proc.pid), signal.SIGINT)
        rc, out, err = finish(spin)
        # the guest ran to its 3 s fence: a receipt, not a lost job
        assert rc == 152 and json.loads(out)["ended"] == "timeout", err
        assert w.proc.wait(60) == 0
        wait_for(lambda: not alive(child), what="the job process exits with the node")
        assert not [e for e in w.logs() if e.get("event") == "job_process.ended"]
    finally:
        w.stop()


def test_no_job_process_outlives_a_node_killed_outright(tmp_path):
    home = tmp_path / "worker"
    w = start_node(home, "--open", "--workers=2")
    try:
        pids = status(w)["job_processes"]["pids"]
        assert len(pids) == 2 and all(alive(p) for p in pids)
        w.proc.kill()
        w.proc.wait(30)
        wait_for(lambda: not any(alive(p) for p in pids), timeout=30,
                 what="the job processes exit once the node is gone")
    finally:
        w.stop()


# -- the pipe between the node and a job process ---------------------------------------

def test_frames_round_trip_and_oversized_ones_are_refused():
    r, wfd = os.pipe()
    try:
        jobproc.write_frame(wfd, {"type": "done", "n": 1}, (b"out", b""))
        header, blobs = jobproc.read_frame(r, 3)
        assert header == {"type": "done", "n": 1, "blobs": [3, 0]} and blobs == [b"out", b""]
        jobproc.write_frame(wfd, {"type": "done"}, (b"four",))
        with pytest.raises(jobproc.ChildGone, match="oversized"):
            jobproc.read_frame(r, 3)
    finally:
        os.close(r)
        os.close(wfd)
    r, wfd = os.pipe()
    try:
        os.write(wfd, (jobproc.HEADER_CAP + 1).to_bytes(4, "big"))
        with pytest.raises(jobproc.ChildGone, match="header of"):
            jobproc.read_frame(r, 0)
        os.close(wfd)
        wfd = -1
        with pytest.raises(jobproc.ChildGone, match="closed"):
            jobproc.read_frame(r, 0)
    finally:
        os.close(r)
        if wfd >= 0:
            os.close(wfd)


def test_a_childs_error_comes_back_as_the_class_it_raised():
    e = jobproc._error({"class": "DigestMismatch", "slug": "digest_mismatch",
                        "message": "changed on disk", "hint": None, "exit_code": 65})
    assert isinstance(e, DigestMismatch) and e.message == "changed on disk"
    e = jobproc._error({"class": "MissingInput", "slug": "missing_input", "message": "m",
                        "hint": "fetch it", "exit_code": 66})
    assert isinstance(e, MissingInput) and e.hint == "fetch it" and e.exit_code == 66
    e = jobproc._error({"class": "Interrupted", "slug": "interrupted", "message": "m"})
    assert isinstance(e, Interrupted)
    # a name that is not an error class of the project: an internal error, never eval'd
    for name in ("os", "Path", "__builtins__", "PhaseErrorX", None):
        e = jobproc._error({"class": name, "slug": "x", "message": "m"})
        assert type(e) is InternalError and e.slug == "x"


def test_a_child_that_cannot_start_fails_its_job_clearly(tmp_path):
    """A job process that dies before it is ready (here: its start frame names no node
    id) fails the job with what happened, and the next start is not at once."""
    from types import SimpleNamespace

    from phase_core.documents import Verified

    procs = jobproc.JobProcesses(1, home=tmp_path, cas_root=tmp_path / "cas",
                                 identity=SimpleNamespace(node_id="not a node id"),
                                 output_cap=1 << 20)
    try:
        v = Verified("job_manifest", "sha256:" + "0" * 64, {"stdin": None}, (), {})
        t = time.monotonic()
        for _ in range(2):
            with pytest.raises(InternalError, match="job process"):
                procs.run(v, None, {}, None)
        assert time.monotonic() - t >= jobproc.RESPAWN_PAUSE_S * 0.9
        assert procs.restarts == 2
    finally:
        procs.close()


def test_plasmd_jobproc_is_not_for_people(tmp_path):
    """Started by hand, a job process says what it is for and exits; started as the
    node starts it but with nothing on its stdin, it just exits."""
    r = subprocess.run([script("python"), "-m", "plasmd.jobproc"], stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=60)
    assert r.returncode == 1 and r.stdout == b"" and b"started by plasmd only" in r.stderr
    rfd, wfd = os.pipe()
    try:
        r = subprocess.run([script("python"), "-m", "plasmd.jobproc", str(rfd)],
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=60,
                           pass_fds=(rfd,))
    finally:
        os.close(rfd)
        os.close(wfd)
    assert r.returncode == 0 and r.stdout == b"", r.stderr


def test_job_processes_get_the_nodes_interpreter_flags(tmp_path):
    """Under the Debian package the node runs as ``python3 -I`` (isolated: no
    PYTHONPATH, no user site); its job processes are started the same way."""
    import sys

    home = tmp_path / "worker"
    w = start_node(home, "--open", "--workers=1", prefix=(sys.executable, "-I"))
    try:
        (child,) = status(w)["job_processes"]["pids"]
        argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        assert argv[1:4] == [b"-I", b"-m", b"plasmd.jobproc"], argv
        r = submit(tmp_path / "client", w.peer, HELLO, stdin=b"isolated", tmp=tmp_path)
        assert r.returncode == 0 and r.stdout == b"detalosi", r.stderr
    finally:
        w.stop()


def test_a_cancel_that_comes_before_its_job_is_read_still_stops_it(tmp_path):
    """The node sends a cancel as soon as its job is cancelled, which can be before a
    child still starting has read that job: the child then stops the job as it
    starts, rather than run it to its fence and be killed 5 s after the cancel."""
    import threading

    from phase_core.cas import ContentStore
    from phase_core.documents import Verified
    from phase_core.identity import Identity
    from phase_core.limits import DEFAULT_LIMITS
    from plasmd.submit import make_manifest
    from tests.plasmd.conftest import EXAMPLES

    spin = (EXAMPLES / "spin.wasm").read_bytes()
    me = Identity.generate()
    cas = ContentStore(tmp_path / "cas")
    cas.put_bytes(spin)
    m = make_manifest(me, spin, None, argv=["spin.wasm"],
                      limits=dict(DEFAULT_LIMITS, wall_ms=20_000))
    v = Verified("job_manifest", "sha256:" + "1" * 64, m["body"], (), m)
    procs = jobproc.JobProcesses(1, home=tmp_path, cas_root=cas.root, identity=me,
                                 output_cap=1 << 20)
    try:
        cancel = threading.Event()
        cancel.set()  # before the child has even started
        with pytest.raises(Interrupted):
            procs.run(v, None, dict(DEFAULT_LIMITS), cancel)
        # stopped by the cancel, not killed at the end of its grace
        assert procs.restarts == 0 and len(procs.pids()) == 1
    finally:
        procs.close()


def _readable_memory(pid: int) -> bytes:
    """Every private writable mapping of process ``pid`` (its heap and anonymous memory)."""
    chunks = []
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            addr, perms = line.split()[:2]
            if not perms.startswith("rw"):
                continue
            lo, hi = (int(x, 16) for x in addr.split("-"))
            try:
                mem.seek(lo)
                chunks.append(mem.read(hi - lo))
            except (OSError, ValueError, OverflowError):
                continue
    return b"".join(chunks)


def test_the_nodes_key_never_enters_a_job_process(tmp_path):
    """A job process runs guests, so it is where a guest that escaped the engine would
    be: it gets the node's id, never its key. The node signs the receipt body the
    child returns, and the receipt verifies with the node's key."""
    from phase_core import envelope
    from phase_core.identity import load
    from plasmd.receiptlog import ReceiptLog

    home = tmp_path / "worker"
    w = start_node(home, "--open", "--workers=1")
    try:
        r = submit(tmp_path / "client", w.peer, HELLO, stdin=b"keyless", tmp=tmp_path)
        assert r.returncode == 0 and r.stdout == b"sselyek", r.stderr
        (child,) = status(w)["job_processes"]["pids"]
        seed = load(home / "key")._seed
        memory = _readable_memory(child)
        assert len(memory) > 1 << 20  # (its heap was read)
        assert seed not in memory and seed.hex().encode() not in memory
        assert w.node_id.encode() in memory  # the id it puts in receipt bodies
        (logged,) = [e.receipt for e in ReceiptLog(home / "receipts.jsonl").entries()]
        env = envelope.parse(logged)
        assert list(envelope.signer_keys(env)) == [w.node_id] and env.body["stdout_bytes"] == 7
        envelope.check_signatures(env)
    finally:
        w.stop()


@pytest.mark.parametrize("field, value", [
    ("job", "sha256:" + "2" * 64), ("module", "sha256:" + "3" * 64),
    ("stdin", "sha256:" + "4" * 64), ("worker", "5" * 64), ("stdout_bytes", 2),
    ("stderr", "sha256:" + "6" * 64), ("deterministic", True),
    ("limits", dict(DEFAULT_LIMITS, fuel=1)), ("wall_ms", "fast"), ("extra", 1)])
def test_the_node_signs_only_the_receipt_of_the_job_it_sent(field, value):
    """What a child answers is checked before the node signs it: a body for another
    job, module, stdin, worker, limits or outputs, or one that is not a receipt body,
    is a broken child (its job fails, the child is replaced), never a signed receipt."""
    from phase_core.canonical import content_id
    from phase_core.documents import Verified
    from plasm_exec.api import RunResult
    from plasm_exec.receipts import receipt_body
    from plasm_exec.values import Outcome

    m = {"module": "sha256:" + "a" * 64, "stdin": "sha256:" + "b" * 64,
         "limits": dict(DEFAULT_LIMITS)}
    v = Verified("job_manifest", "sha256:" + "c" * 64, m, (), {})
    node = "d" * 64
    o = Outcome(ended="exited", exit_code=0, trap=None, fuel_consumed=5, fuel_exact=True,
                wall_ms=1, message=None)
    res = RunResult(o, m["stdin"], content_id(b"x"), content_id(b""), 1, 0, b"x", b"")
    good = receipt_body(job_id=v.id, module_id=m["module"], result=res, limits=m["limits"],
                        deterministic=False, runtime={"name": "wasmtime", "version": "1"},
                        worker=node, completed=0)
    jobproc._check_receipt_body(good, v, {}, node, b"x", b"")  # the right one passes
    with pytest.raises(jobproc.ChildGone):
        jobproc._check_receipt_body({**good, field: value}, v, {}, node, b"x", b"")
    with pytest.raises(jobproc.ChildGone, match="stdout"):  # outputs other than it names
        jobproc._check_receipt_body(good, v, {}, node, b"y", b"")
