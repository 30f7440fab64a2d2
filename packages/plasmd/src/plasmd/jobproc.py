"""Job processes: the node's guests run in child processes (docs/architecture.md,
"Job processes").

The network process keeps everything that has one owner: the QUIC connections,
admission, the replay journal, the receipt log and the status. ``JobProcesses``
keeps one child (``python -m plasmd.jobproc``) per guest slot. A job thread that
holds a guest slot (``plasmd.fair``) takes an idle child, sends it the verified
job over a pipe and waits for the answer: the receipt's body and the outputs, or
the error. So the guest's run and wasmtime's own work leave the network process's
GIL, and a guest that brings its process down (a fault in the engine, the kernel's
OOM killer) fails its own job, not the node; the child is replaced. The node's key
never enters a child: the network process checks that the body is the receipt of
the job it sent (its job, module, stdin, worker, deterministic profile and limits)
naming the outputs the child sent, and signs it; the run's outcome and ids are read
from that body (the child adds only the outcome's message).

The pipes carry frames: a 4-byte big-endian length, a JSON header, then the byte
strings the header counts (``"blobs": [n, ...]``). Nothing is pickled, and what a
child sends is parsed under caps like a peer's input: a guest that broke out of
the engine would hold that end of the pipe.

A child reads its start frame (the home, the store, the node's id), answers
``ready``, then runs one job at a time, each read from its stdin by the thread that
runs it. A ``cancel`` frame, on a pipe of its own that a second thread reads, stops
the running guest (the job ends ``Interrupted``; no receipt is made), or the job
before it starts when the cancel came first. It ignores SIGINT and SIGTERM: Ctrl-C
and systemd's stop reach the whole process group, and the node finishes its jobs
before it stops. It exits as soon as its stdin ends, so no child
outlives the node, whatever ends the node.
"""

from __future__ import annotations

import json
import os
import queue
import select
import signal
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import Any

from phase_core import errors, log
from phase_core.errors import InternalError, Interrupted, PhaseError, TempFailure

__all__ = ["JobProcesses", "main"]

HEADER_CAP = 4 << 20  # a job's manifest body, or a receipt's body and a message
CANCEL_GRACE_S = 5.0  # a cancelled guest that has not stopped by then: its child is killed
POLL_S = 0.05  # how often a waiting job thread looks at its job's cancel flag
RESPAWN_PAUSE_S = 1.0  # a child that died before it was ready is not restarted sooner
_LEN = 4
# the node's own interpreter flags (-I under the Debian package's wrapper, say), as
# multiprocessing passes them to its children
_INTERPRETER_FLAGS = tuple(subprocess._args_from_interpreter_flags())  # type: ignore[attr-defined]


class ChildGone(Exception):
    """The child's end of a pipe closed, or it sent what no child sends."""


# -- frames ------------------------------------------------------------------------

def write_frame(fd: int, header: dict[str, Any], blobs: tuple[bytes, ...] = ()) -> None:
    head = json.dumps({**header, "blobs": [len(b) for b in blobs]},
                      separators=(",", ":")).encode()
    data = b"".join((len(head).to_bytes(_LEN, "big"), head, *blobs))
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_exact(fd: int, n: int) -> bytes:
    parts = []
    while n:
        got = os.read(fd, min(n, 1 << 20))
        if not got:
            raise ChildGone("the pipe closed")
        parts.append(got)
        n -= len(got)
    return b"".join(parts)


def read_frame(fd: int, blob_cap: int) -> tuple[dict[str, Any], list[bytes]]:
    """One frame; ``ChildGone`` at the end of the pipe or on a frame over the caps."""
    n = int.from_bytes(_read_exact(fd, _LEN), "big")
    if n > HEADER_CAP:
        raise ChildGone(f"a frame header of {n} bytes (at most {HEADER_CAP})")
    try:
        header = json.loads(_read_exact(fd, n))
    except (ValueError, UnicodeDecodeError) as e:
        raise ChildGone(f"a frame header that is not JSON: {e}") from None
    sizes = header.get("blobs") if isinstance(header, dict) else None
    if not (isinstance(sizes, list) and len(sizes) <= 2
            and all(type(s) is int and 0 <= s <= blob_cap for s in sizes)):
        raise ChildGone("a frame with malformed or oversized byte strings")
    return header, [_read_exact(fd, s) for s in sizes]


# -- the node's side -----------------------------------------------------------------

class Child:
    """One job process and its two pipes; used by one job thread at a time."""

    def __init__(self, start: dict[str, Any]) -> None:
        cancels, self.cancel_fd = os.pipe()  # its own pipe: the child reads it on a thread
        try:
            self.proc = subprocess.Popen(
                [sys.executable, *_INTERPRETER_FLAGS, "-m", "plasmd.jobproc", str(cancels)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True,
                pass_fds=(cancels,))
        except BaseException:
            os.close(self.cancel_fd)
            raise
        finally:
            os.close(cancels)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.to_child = self.proc.stdin.fileno()
        self.from_child = self.proc.stdout.fileno()
        self.poller = select.poll()
        self.poller.register(self.from_child, select.POLLIN)
        self.ready = False
        self.n = 0
        try:
            write_frame(self.to_child, {"type": "start", **start})
        except OSError:
            pass  # it died at once: the first job finds out (ChildGone)

    def run(self, job: dict[str, Any], cancel: threading.Event | None, blob_cap: int
            ) -> tuple[dict[str, Any], list[bytes]]:
        """Send ``job``, wait for its answer (a ``done`` or ``error`` header and the
        outputs). ``ChildGone`` if the child died or broke the protocol, or did not
        stop within ``CANCEL_GRACE_S`` of a cancel (then it has been killed)."""
        self.n += 1
        try:
            write_frame(self.to_child, {"type": "job", "n": self.n, **job})
        except OSError as e:
            raise ChildGone(f"cannot send it the job: {e.strerror}") from None
        cancelled_at: float | None = None
        while True:
            if not self.poller.poll(POLL_S * 1000 if cancel is not None else None):
                assert cancel is not None
                if cancel.is_set():
                    now = time.monotonic()
                    if cancelled_at is None:
                        cancelled_at = now
                        try:
                            write_frame(self.cancel_fd, {"type": "cancel", "n": self.n})
                        except OSError:
                            pass  # it is gone: the next read says so
                    elif now - cancelled_at > CANCEL_GRACE_S:
                        self.kill()
                        raise ChildGone(f"its guest did not stop within {CANCEL_GRACE_S:g} s "
                                        "of the cancel; it was killed")
                continue
            header, blobs = read_frame(self.from_child, blob_cap)
            kind = header.get("type")
            if kind == "ready" and not self.ready:
                self.ready = True
                continue
            if kind in ("done", "error") and header.get("n") == self.n:
                return header, blobs
            raise ChildGone(f"an unexpected frame {str(kind)[:40]!r}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                f.close()
        if self.cancel_fd >= 0:
            os.close(self.cancel_fd)
            self.cancel_fd = -1

    def stop(self, timeout_s: float) -> None:
        """End its stdin (it exits when idle); kill it if it has not within ``timeout_s``."""
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            pass
        self.kill()

    def ended_how(self) -> str:
        """How it ended: its pipe closed, so it is exiting or gone (or it lied)."""
        try:
            code = self.proc.wait(2)
        except subprocess.TimeoutExpired:
            code = None
        if code is None:
            return "it broke the protocol"
        if code < 0:
            try:
                return f"it was killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"it was killed by signal {-code}"
        return f"it exited with status {code}"


class JobProcesses:
    """``count`` job processes for one node; ``run`` one verified job in an idle one."""

    def __init__(self, count: int, *, home: Path, cas_root: Path, identity: Any,
                 output_cap: int) -> None:
        self.count = count
        self.restarts = 0
        self._identity = identity  # signs the receipts; its key stays in this process
        self._start = {"home": str(home), "cas": str(cas_root), "worker": identity.node_id}
        self._blob_cap = output_cap
        # last in, first out: one job after another goes to the same child, whose
        # caches are warm, and the other children stay asleep
        self._idle: queue.LifoQueue[Child | None] = queue.LifoQueue()
        self._all: set[Child] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._last_early_death = 0.0
        for _ in range(count):
            self._idle.put(None)  # a slot whose child starts when first needed
        # a node dropped without its drain (a library user, a test): its children
        # get their end of stdin once it is collected, or when this process exits
        weakref.finalize(self, _close_all, self._all)

    def start_all(self) -> None:
        """Start every child now (the node's start), so the first jobs do not wait.
        One that cannot be started now is started by the first job that needs it."""
        taken = [self._idle.get() for _ in range(self.count)]
        for c in taken:
            self._idle.put(c if c is not None else self._replacement())

    def _replacement(self) -> Child | None:
        """A child started now for a slot whose child ended (it loads while the slot
        waits for its next job), or None: the next job starts one."""
        if self._closed:
            return None
        try:
            return self._spawn()
        except OSError as e:
            log.get().warning("job_process.not_started", error=e.strerror)
            return None

    def _spawn(self) -> Child:
        c = Child(self._start)
        with self._lock:
            self._all.add(c)
        return c

    def run(self, verified: Any, stdin: Path | None, ceilings: dict[str, int],
            cancel: threading.Event | None) -> Any:
        """Run one job whose guest slot the caller holds; its ``JobResult``, or the
        error the guest's run raised (``InternalError`` when the child died)."""
        from plasm_exec.api import RunResult  # (none of the four imports wasmtime)
        from plasm_exec.job import JobResult
        from plasm_exec.receipts import sign_receipt
        from plasm_exec.values import Outcome

        if self._closed:
            raise InternalError("the node's job processes are stopped")
        child = self._idle.get()
        if child is None:
            try:
                child = self._spawn()
            except OSError as e:  # (too many processes or open files, say)
                self._idle.put(None)
                raise TempFailure(f"cannot start a job process: {e.strerror}") from None
        job = {"id": verified.id, "body": verified.body, "ceilings": ceilings,
               "stdin": None if stdin is None else str(stdin)}
        try:
            header, blobs = child.run(job, cancel, self._blob_cap)
            if header["type"] == "error":
                self._idle.put(child)
                raise _error(header)
            out, err = blobs
            rbody, message = header["receipt_body"], header["message"]
            _check_receipt_body(rbody, verified, ceilings, self._identity.node_id, out, err)
            result = JobResult(verified.id, sign_receipt(rbody, self._identity), RunResult(
                Outcome(**{k: rbody[k] for k in Outcome._fields if k != "message"},
                        message=None if message is None else str(message)[:4096]),
                rbody["stdin"], rbody["stdout"], rbody["stderr"], len(out), len(err), out, err))
        except (ChildGone, OSError, KeyError, TypeError, ValueError) as e:
            how = (child.ended_how() if isinstance(e, ChildGone | OSError)
                   else "it broke the protocol")
            child.kill()
            pause = 0.0
            with self._lock:
                self._all.discard(child)
                self.restarts += 1
                if not child.ready:  # it never started: do not start the next at once
                    now = time.monotonic()
                    pause = self._last_early_death + RESPAWN_PAUSE_S - now
                    self._last_early_death = now
            log.get().warning("job_process.ended", pid=child.proc.pid, how=how, error=str(e),
                              message="the job process running a job ended; its job failed "
                                      "and the node starts another")
            if pause > 0:
                time.sleep(pause)  # a child that cannot start must not spin
            self._idle.put(self._replacement())
            if cancel is not None and cancel.is_set():
                raise Interrupted("the job was cancelled; its job process was stopped and "
                                  "nothing was recorded") from None
            raise InternalError(f"the job process running this job ended ({how}: {e}); "
                                "the node replaced it", hint="submit the job again as a new "
                                "job: this one's id is recorded") from None
        self._idle.put(child)
        return result

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop every child: each finishes the job it runs, then exits."""
        self._closed = True
        with self._lock:
            children = list(self._all)
            self._all.clear()
        for c in children:
            c.stop(timeout_s)

    def pids(self) -> list[int]:
        with self._lock:
            return sorted(c.proc.pid for c in self._all if c.proc.poll() is None)


def _close_all(children: set[Child]) -> None:
    """End every child's stdin, without waiting (``weakref.finalize``)."""
    for c in list(children):
        if c.proc.stdin is not None and not c.proc.stdin.closed:
            c.proc.stdin.close()


def _check_receipt_body(rbody: Any, verified: Any, ceilings: dict[str, int], worker: str,
                        out: bytes, err: bytes) -> None:
    """Raise ``ChildGone`` unless ``rbody`` is a well-formed receipt body of the job that
    was sent, naming the outputs the child sent: what the node signs, a child cannot
    point at another job, module, stdin, worker, limits or output."""
    from phase_core import receipt
    from plasm_exec.job import job_limits

    try:
        receipt.check(rbody)
        receipt.check_binding(rbody, job_id=verified.id, manifest_body=verified.body,
                              worker=worker, stdout=out, stderr=err)
    except PhaseError as e:
        raise ChildGone(f"its receipt is not the one of the job it was sent: {e.message}"
                        ) from None
    if rbody["limits"] != job_limits(verified.body, ceilings):
        raise ChildGone("its receipt states other limits than the job's")


def _error(header: dict[str, Any]) -> PhaseError:
    """The child's error as the class it raised (a ``phase_core.errors`` class)."""
    cls = getattr(errors, str(header.get("class")), None)
    if not (isinstance(cls, type) and issubclass(cls, PhaseError)):
        cls = InternalError
    e = cls(str(header.get("message"))[:4096], hint=header.get("hint") or None,
            slug=str(header.get("slug"))[:64])
    if type(header.get("exit_code")) is int:
        e.exit_code = header["exit_code"]
    return e


# -- the child's side ----------------------------------------------------------------

def main() -> None:
    """``python -m plasmd.jobproc``: one job process (started by the node only)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if len(sys.argv) != 2 or not sys.argv[1].isdigit():
        sys.exit("plasmd.jobproc: started by plasmd only (it runs a node's guests)")
    inp, out, cancels = 0, os.dup(1), int(sys.argv[1])
    os.dup2(2, 1)  # a stray print goes to the node's stderr, never into the pipe
    try:
        start, _ = read_frame(inp, 0)
    except ChildGone:
        os._exit(0)
    from phase_core import manifest
    from phase_core.canonical import is_hex
    from phase_core.cas import ContentStore
    from phase_core.documents import Verified
    from plasm_exec.api import Executor
    from plasm_exec.job import run_job

    worker = start.get("worker")
    if not is_hex(worker, 64):
        sys.exit("plasmd.jobproc: the start frame names no node id")
    executor = Executor(Path(start["home"]))
    cas = ContentStore(Path(start["cas"]))
    current: list[Any] = [0, threading.Event()]  # the job running: its n, its cancel
    # the latest job cancelled: a cancel can come before its job is read (a child
    # still starting), and then stops the job as it starts
    cancelled = [0]

    def cancel_reader() -> None:
        while True:
            try:
                frame, _ = read_frame(cancels, 0)
            except (ChildGone, OSError):
                os._exit(0)  # the node is gone, even mid-job: so is this process
            n = frame.get("n")
            if type(n) is int:
                cancelled[0] = max(cancelled[0], n)
                if n == current[0]:
                    current[1].set()

    threading.Thread(target=cancel_reader, name="jobproc-cancel", daemon=True).start()
    write_frame(out, {"type": "ready", "pid": os.getpid()})
    while True:
        try:
            job, _ = read_frame(inp, 0)
        except (ChildGone, OSError):
            os._exit(0)  # the node stops (or is gone): so is this process
        cancel = threading.Event()
        current[:] = [job["n"], cancel]
        if cancelled[0] >= job["n"]:  # (set after ``current``: either side sees the other)
            cancel.set()
        try:
            verified = Verified(manifest.TYPE, job["id"], job["body"], (), {})
            stdin = job["stdin"]
            _, rbody, res = run_job({}, worker=worker, executor=executor, cas=cas, now=0,
                                    ceilings=job["ceilings"], verified=verified,
                                    store_outputs=False, cancel=cancel,
                                    stdin_blob=(lambda _cid, p=stdin: Path(p)))
        except PhaseError as e:
            write_frame(out, {"type": "error", "n": job["n"], "class": _base_name(e),
                              "slug": e.slug, "message": e.message, "hint": e.hint,
                              "exit_code": e.exit_code})
            continue
        except Exception as e:  # a bug: the job fails, the process goes on
            write_frame(out, {"type": "error", "n": job["n"], "class": "InternalError",
                              "slug": "internal", "message": f"the job process failed: {e!r}",
                              "hint": None, "exit_code": InternalError.exit_code})
            continue
        write_frame(out, {"type": "done", "n": job["n"], "receipt_body": rbody,
                          "message": res.outcome.message},
                    (res.stdout or b"", res.stderr or b""))


def _base_name(e: PhaseError) -> str:
    """The name of the nearest ``phase_core.errors`` class of ``e``."""
    for cls in type(e).__mro__:
        if getattr(errors, cls.__name__, None) is cls:
            return cls.__name__
    return "PhaseError"


if __name__ == "__main__":
    main()
