"""The local node API's connections on the control socket (docs/local-api.md).

JSON lines both ways; requests may overlap on one connection and their answers
carry the request's ``req``. Who may connect is decided here from the caller's
credentials (SO_PEERCRED): the daemon's own user and root ("owners"), and the
members of ``control_group`` when config.toml names one. Bounded everywhere: the
line length, the inline bytes, the unfinished jobs per user, the connections.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import socket
import struct
from collections import Counter
from collections.abc import Callable
from typing import Any

from phase_core import log
from phase_core.errors import InputError, MissingInput, PhaseError, TempFailure
from plasmd import localreq as rq
from plasmd.localjobs import Caller, JobRun, failure_record

MAX_LINE = 8 << 20
MAX_JOBS_PER_CLIENT = 16
MAX_CONNECTIONS = 64
IDLE_S = 60.0


def peer_credentials(writer: asyncio.StreamWriter) -> tuple[int, int, int] | None:
    sock = writer.get_extra_info("socket")
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (OSError, AttributeError):
        return None
    pid, uid, gid = struct.unpack("3i", creds)
    return pid, uid, gid


def in_group(pid: int, gid: int, group: int) -> bool:
    """The process's primary or supplementary groups include ``group``."""
    if gid == group:
        return True
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Groups:"):
                    return str(group) in line.split()[1:]
    except OSError:
        pass
    return False


class LocalApi:
    """Serves the control socket's connections for one node."""

    def __init__(self, node: Any, status: Callable[[], dict[str, Any]],
                 group_gid: int | None = None) -> None:
        self.node = node
        self.status = status
        self.group_gid = group_gid
        self.per_uid: Counter[int] = Counter()
        self.runs: set[JobRun] = set()
        self.connections = 0
        self._serving: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}
        self._jobs: Any = None

    @property
    def jobs(self) -> Any:
        if self._jobs is None:
            from plasmd.localjobs import LocalJobs

            self._jobs = LocalJobs(self.node)
        return self._jobs

    def caller(self, writer: asyncio.StreamWriter) -> Caller | None:
        creds = peer_credentials(writer)
        if creds is None:
            return None
        pid, uid, gid = creds
        owner = uid == os.getuid() or uid == 0
        if owner or (self.group_gid is not None and in_group(pid, gid, self.group_gid)):
            return Caller(uid, gid, pid, owner)
        return None

    async def client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            caller = self.caller(writer)
            if caller is None or self.connections >= MAX_CONNECTIONS:
                return
            self.connections += 1
            me = asyncio.current_task()
            assert me is not None
            self._serving[me] = writer
            try:
                await _Conn(self, caller, writer).serve(reader)
            finally:
                self.connections -= 1
                self._serving.pop(me, None)
        except (ConnectionError, TimeoutError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        """At drain: let the jobs in flight finish and deliver, then drop the
        warm connections (new submits are refused while the node drains)."""
        tasks = [r.task for r in self.runs if r.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for _task, writer in list(self._serving.items()):  # idle clients: hang up
            writer.transport.abort()
        if self._serving:
            await asyncio.wait(list(self._serving), timeout=5)
        if self._jobs is not None:
            await self._jobs.close()


def _stop(run: JobRun) -> None:
    run.cancel.set()  # a guest running here stops and its run raises
    if not run.here and run.task is not None:
        run.task.cancel()


class _Conn:
    def __init__(self, api: LocalApi, caller: Caller, writer: asyncio.StreamWriter) -> None:
        self.api = api
        self.caller = caller
        self.writer = writer
        self.runs: set[JobRun] = set()
        self.tasks: set[asyncio.Task[Any]] = set()

    def send(self, rec: dict[str, Any], req: str | None = None) -> None:
        if self.writer.is_closing():
            return
        if req is not None:
            rec = {"v": 1, "type": rec.pop("type", "error"), "req": req, **rec}
        self.writer.write(json.dumps(rec, separators=(",", ":")).encode() + b"\n")

    def error(self, e: BaseException, req: str | None, job: str | None = None) -> None:
        rec = {"v": 1, "type": "error", **failure_record(e)}
        if job:
            rec["job"] = job
        self.send(rec, req)

    async def serve(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                try:
                    async with asyncio.timeout(IDLE_S):  # (wait_for can drop a cancel)
                        line = await reader.readline()
                except TimeoutError:
                    if self.tasks:
                        continue
                    return
                except ValueError:  # a line over MAX_LINE: the rest cannot be read
                    self.error(InputError(f"a request line is over {MAX_LINE} bytes",
                                          slug="too_large",
                                          hint="send a path or a content id instead"), None)
                    return
                if not line:  # the client sends no more; it may still read
                    await self._finish()
                    return
                if line.strip():
                    self.handle(line)
                await self.writer.drain()
        finally:
            for run in list(self.runs):
                _stop(run)
            if self.tasks:
                await asyncio.gather(*self.tasks, return_exceptions=True)
            try:
                await self.writer.drain()
            except ConnectionError:
                pass

    async def _finish(self) -> None:
        """After the client's EOF: answer what runs, unless the client is gone."""
        sock = self.writer.get_extra_info("socket")
        poll = select.poll()
        poll.register(sock.fileno(), select.POLLHUP)
        while self.tasks:
            await asyncio.wait(self.tasks, timeout=0.5)
            if any(ev & select.POLLHUP for _, ev in poll.poll(0)):
                for run in list(self.runs):
                    _stop(run)  # closed for good, not just half: cancel its jobs

    def handle(self, line: bytes) -> None:
        try:
            req = json.loads(line)
        except ValueError:
            self.error(rq.bad("the line is not JSON"), None)
            return
        if not isinstance(req, dict):
            self.error(rq.bad("a request is a JSON object"), None)
            return
        rid = req.get("req")
        if rid is not None and not (isinstance(rid, str) and 1 <= len(rid) <= 64):
            self.error(rq.bad("req must be a string of 1 to 64 characters"), None)
            return
        try:
            if req.get("v") != 1:
                raise rq.bad('a request has "v": 1')
            kind = req.get("type")
            if kind == "status":
                rq.only(req, frozenset({"v", "type", "req"}), "status")
                st = dict(self.api.status())
                st["local_api"] = {"connections": self.api.connections,
                                   "jobs": len(self.api.runs)}
                self.send(st, rid)
            elif kind == "submit":
                self._spawn(self.submit(req, rid))
            elif kind == "cancel":
                self.cancel(req, rid)
            elif kind == "receipts":
                from plasmd.localreceipts import receipts

                self._spawn(receipts(self.api.node, req, rid, self.send))
            elif kind == "verify_receipt":
                from plasmd.localreceipts import verify_receipt

                self._spawn(verify_receipt(self.api.node, req, rid, self.send))
            else:
                raise rq.bad(f"unknown request type {str(kind)[:40]!r}",
                             hint="status, submit, cancel, receipts or verify_receipt")
        except PhaseError as e:
            self.error(e, rid)

    def _spawn(self, coro: Any) -> None:
        t = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(t)
        t.add_done_callback(self._done)

    def _done(self, t: asyncio.Task[Any]) -> None:
        self.tasks.discard(t)
        if not t.cancelled() and t.exception() is not None:  # a bug: say so
            e = t.exception()
            log.get().error("local_api.internal_error", error=repr(e)[:300])

    async def submit(self, req: dict[str, Any], rid: str | None) -> None:
        from plasmd.localjobs import prepare

        api, uid = self.api, self.caller.uid
        if api.node is None or api.node.draining:
            self.error(TempFailure("the node is shutting down", slug="shutting_down"), rid)
            return
        if api.per_uid[uid] >= MAX_JOBS_PER_CLIENT:
            self.error(TempFailure(f"this client has {MAX_JOBS_PER_CLIENT} unfinished jobs",
                                   slug="queue_full", hint="wait for one to finish"), rid)
            return
        api.per_uid[uid] += 1
        run = JobRun(uid, rid, task=asyncio.current_task())
        self.runs.add(run)
        api.runs.add(run)
        try:
            p = await asyncio.to_thread(prepare, api.node, req, self.caller)
            run.job = p.job
            where = next(iter(p.where)) if "capabilities" not in p.where else "capabilities"
            self.send({"type": "job_accepted", "job": p.job,
                       "submitter": _signer(p.manifest), "where": "self" if where == "node"
                       else where, "manifest": p.manifest}, rid)
            progress = req.get("progress", True) is not False

            def emit(ev: dict[str, Any]) -> None:
                if progress:
                    self.send({"type": "job_progress", "job": p.job, **ev}, rid)

            rec = await api.jobs.run(p, run, emit)
            self.send(rec, rid)
        except (Exception, asyncio.CancelledError) as e:
            if isinstance(e, PhaseError) and e.exit_code == 70:
                log.get().error("local_api.job_failed", **e.to_record())
            self.error(e, rid, run.job)
        finally:
            api.per_uid[uid] -= 1
            self.runs.discard(run)
            api.runs.discard(run)

    def cancel(self, req: dict[str, Any], rid: str | None) -> None:
        rq.only(req, frozenset({"v", "type", "req", "job", "target"}), "cancel")
        job, target = req.get("job"), req.get("target")
        if (job is None) == (target is None):
            raise rq.bad("cancel names a job or a target (a submit's req on this connection)")
        pool = self.runs if target is not None else (
            self.api.runs if self.caller.owner else
            {r for r in self.api.runs if r.uid == self.caller.uid})
        for run in list(pool):
            if (target is not None and run.req == target) or (job is not None and run.job == job):
                _stop(run)
                self.send({"type": "cancelled", **({"job": run.job} if run.job else {})}, rid)
                return
        raise MissingInput(f"no unfinished job {str(job or target)[:80]} of this client",
                           slug="unknown_job", hint="it may have finished already")


def _signer(env: dict[str, Any]) -> str:
    return str(env["signatures"][0]["key"])
