"""``plasmd dispatch``: spread a stream of jobs over many nodes (docs/dispatch.md).

The asyncio shell around ``dispatchsched.Scheduler``: it reads a job when the
scheduler wants one, starts the attempts it places (``dispatchnodes.Nodes``),
reports how each ended, and writes one record per job as each settles, in
completion order, with the job's input ``index`` and ``line``. Disagreements go
to the disagreement log (``disagreelog``); a dispute may be settled by
re-executing the job here (``settle``).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from typing import Any

from phase_core import exitcodes, log
from phase_core.errors import PhaseError
from plasmd import dispatchio as io
from plasmd import dispatchsched as ds
from plasmd import quorum as q
from plasmd.disagreelog import DisagreementLog, entry
from plasmd.pool import Job
from plasmd.submit import Outcome, refused_module

Emit = Callable[[dict[str, Any]], None]
Settle = Callable[[Job], q.Key]  # re-execute here: the vote of the local run


class Dispatcher:
    def __init__(self, sched: ds.Scheduler, nodes: Any, emit: Emit, *,
                 job_timeout_s: float | None = None, dlog: DisagreementLog | None = None,
                 settle: Settle | None = None) -> None:
        self.sched, self.nodes, self.emit = sched, nodes, emit
        self.job_timeout_s = job_timeout_s
        self.dlog, self.settle = dlog, settle
        self.status = exitcodes.OK
        self.jobs: dict[int, tuple[int, Job]] = {}  # index → (line, job)
        self.outcomes: dict[int, dict[str, Outcome]] = {}
        self.reported: set[int] = set()  # indexes whose record is out (until retired)
        self.most_live = 0  # the most jobs held at once (bounded memory, tested)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._room = asyncio.Event()
        self._changed = asyncio.Event()
        self._input_done = False
        self._index = 0
        self._errors: dict[int, dict[str, PhaseError]] = {}
        self._settling: set[int] = set()
        self._running: dict[int, set[asyncio.Task[Any]]] = {}  # index → its attempts
        self._cut: set[int] = set()  # jobs past their deadline: their attempts stop
        self._crash: BaseException | None = None

    # -- the main loop ------------------------------------------------------------
    async def run(self, reader: io.Reader, *, discovery: Any = None) -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGINT, stop.set)
        feeder = asyncio.create_task(self._feed(reader))
        finder = None
        if discovery is not None:
            self.sched.discovering = True
            finder = asyncio.create_task(self._discover(discovery))
        try:
            while not stop.is_set():
                if feeder.done() and feeder.exception() is not None:
                    raise feeder.exception()  # type: ignore[misc]
                if self._crash is not None:
                    raise self._crash
                if self._input_done and not self.sched.live and not self._tasks:
                    break
                self._changed.clear()
                waiter = asyncio.create_task(self._changed.wait())
                stopper = asyncio.create_task(stop.wait())
                due = self.sched.next_deadline()
                await asyncio.wait([waiter, stopper, feeder], return_when=asyncio.FIRST_COMPLETED,
                                   timeout=None if due is None else max(0.0, due - loop.time()))
                waiter.cancel()
                stopper.cancel()
                if due is not None and loop.time() >= due:
                    self._pump()  # a job's deadline passed: it fails (Scheduler.expire)
        finally:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signal.SIGINT)
            for t in (feeder, finder, *self._tasks):
                if t is not None:
                    t.cancel()
            await asyncio.gather(*(t for t in (feeder, finder, *self._tasks) if t is not None),
                                 return_exceptions=True)
        if stop.is_set():
            return self._interrupted()
        return self.status

    def _interrupted(self) -> int:
        """Ctrl-C: every job not yet reported is reported as interrupted (exit 130)."""
        for index in sorted(self.jobs):
            if index in self.reported:
                continue
            line, job = self.jobs[index]
            self.emit({"v": 1, "type": "error", "error": "interrupted",
                       "message": "the dispatch was interrupted before this job settled",
                       "exit_code": exitcodes.INTERRUPTED, "index": index, "line": line,
                       "job": job.id, "hint": "run it again"})
        log.get().warning("dispatch.interrupted", unreported=len(self.jobs) - len(self.reported))
        return exitcodes.INTERRUPTED

    async def _feed(self, reader: io.Reader) -> None:
        while True:
            while not self.sched.wants_input():
                self._room.clear()
                await self._room.wait()
            item = await reader.next()
            if item is None:
                break
            line, job = item
            index, self._index = self._index, self._index + 1
            if isinstance(job, PhaseError):
                log.get().error("dispatch.bad_job", line=line, index=index, **job.to_record())
                self._note(job.exit_code)
                self.emit({"v": 1, "type": "error", "index": index, "line": line,
                           **job.to_record()})
                continue
            self.jobs[index] = (line, job)
            self.sched.add_job(index, job.id, job.manifest["body"].get("requirements") or {},
                               asyncio.get_running_loop().time())
            self.most_live = max(self.most_live, len(self.jobs))
            self._pump()
        self._input_done = True
        self._changed.set()

    async def _discover(self, discovery: dict[str, Any]) -> None:
        try:
            await self.nodes.discover(**discovery)
        except PhaseError as e:
            log.get().warning("dispatch.discovery_failed", **e.to_record())
        finally:
            self.sched.discovering = False
            self._pump()

    def node_added(self, node_id: str, host: str, address: str, capacity: int,
                   caps: dict[str, Any] | None, flagged: int = 0) -> None:
        self.sched.add_node(node_id, host, capacity=capacity, caps=caps, flagged=flagged)
        self._pump()

    # -- attempts -----------------------------------------------------------------
    def _pump(self) -> None:
        now = asyncio.get_running_loop().time()
        self._handle(self.sched.placements(now))
        if self.sched.wants_input():
            self._room.set()
        self._changed.set()

    def _handle(self, events: list[ds.Event]) -> None:
        entries: list[dict[str, Any]] = []
        for ev in events:
            if isinstance(ev, ds.Place):
                task = self._spawn(self._attempt(ev.index, ev.node))
                self._running.setdefault(ev.index, set()).add(task)
            elif isinstance(ev, ds.Accepted):
                entries += self._accepted(ev)
            elif isinstance(ev, ds.Disputed) and self.settle is not None:
                self._settling.add(ev.index)
                self._spawn(self._settle(ev))
            elif isinstance(ev, ds.Disputed):
                entries += self._disputed(ev, None)
            elif isinstance(ev, ds.Failed):
                self._failed(ev)
                if ev.slug == "deadline":  # stop its attempts still running
                    self._cut.add(ev.index)
                    for task in self._running.get(ev.index, ()):
                        task.cancel()
            elif isinstance(ev, ds.Dissent):
                out = self.outcomes[ev.index][ev.node]
                entries.append(self._entry(ev.index, out, "outvoted", ev.accepted,
                                           self._agreeing(ev.index, ev.accepted)))
            elif isinstance(ev, ds.Retired) and ev.index not in self._settling:
                self.jobs.pop(ev.index, None)
                self.outcomes.pop(ev.index, None)
                self._running.pop(ev.index, None)
                self._cut.discard(ev.index)
                self.reported.discard(ev.index)
        if entries and self.dlog is not None:
            self.dlog.append(entries)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        t = asyncio.create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._task_done)
        return t

    def _task_done(self, t: asyncio.Task[Any]) -> None:
        self._tasks.discard(t)
        self._changed.set()
        if not t.cancelled() and t.exception() is not None:  # a bug: stop, with its trace
            self._crash = t.exception()

    async def _settle(self, ev: ds.Disputed) -> None:
        """Re-execute a disputed job here (on a thread), then report it."""
        _, job = self.jobs[ev.index]
        key = None
        assert self.settle is not None
        try:
            key = await asyncio.get_running_loop().run_in_executor(None, self.settle, job)
        except PhaseError as e:
            log.get().warning("dispatch.settle_failed", index=ev.index, **e.to_record())
        entries = self._disputed(ev, key)
        if entries and self.dlog is not None:
            self.dlog.append(entries)
        self._settling.discard(ev.index)
        self._handle([ds.Retired(ev.index)])
        self._changed.set()

    async def _attempt(self, index: int, node: str) -> None:
        loop = asyncio.get_running_loop()
        _, job = self.jobs[index]
        t0 = loop.time()
        timeout = self.job_timeout_s or job.timeout_s
        try:
            out = await self.nodes.run(node, job, timeout)
        except asyncio.CancelledError:
            if index not in self._cut:
                raise
            # its deadline passed (reported): the attempt ends here, no fault of the node
            evs = self.sched.on_failure(index, node, ds.REFUSED, "deadline", loop.time())
        except PhaseError as e:
            kind = _classify(e)
            log.get().info("dispatch.attempt_failed", index=index, node=node, kind=kind,
                           error=e.slug, message=e.message[:200])
            self.outcomes.setdefault(index, {})
            self._errors.setdefault(index, {})[node] = e
            evs = self.sched.on_failure(index, node, kind, e.slug, loop.time())
        else:
            self.outcomes.setdefault(index, {})[node] = out
            evs = self.sched.on_result(index, node, q.vote_of(out.body), loop.time() - t0,
                                       loop.time())
        self._handle(evs)
        self._pump()

    # -- results ------------------------------------------------------------------
    def _accepted(self, ev: ds.Accepted, settled: str | None = None) -> list[dict[str, Any]]:
        d = ev.decision
        line, _ = self.jobs[ev.index]
        outs = self.outcomes[ev.index]
        first = outs[d.agreeing[0]]
        rec = io.job_result(first, ev.index, line, ev.attempts)
        if self.sched.replicas > 1 or settled:
            rec.update(replicas=self.sched.replicas, quorum=self.sched.quorum,
                       agreed=list(d.agreeing),
                       receipts=[outs[n].receipt for n in d.agreeing[1:]])
        if settled:
            rec["settled"] = settled
        self.reported.add(ev.index)
        self.emit(rec)
        b = first.body
        if not (b["ended"] == "exited" and b["exit_code"] == 0):
            how = (f"exited with {b['exit_code']}" if b["ended"] == "exited"
                   else f"ended: {b['ended']}")
            self.emit({"v": 1, "type": "error", "error": "job_failed",
                       "message": f"job {b['job']} ran and {how}",
                       "exit_code": exitcodes.REJECTED, "job": b["job"], "ended": b["ended"],
                       "index": ev.index, "line": line})
            self._note(exitcodes.REJECTED)
        verdict = "reexec" if settled else "outvoted"
        return [self._entry(ev.index, outs[n], verdict, d.key, list(d.agreeing))
                for n in d.dissenting]

    def _disputed(self, ev: ds.Disputed, key: q.Key | None) -> list[dict[str, Any]]:
        """A dispute: settled by ``key`` (a local re-execution's vote) when it matches
        one of the receipts' votes, else reported with every receipt."""
        line, job = self.jobs[ev.index]
        outs = self.outcomes[ev.index]
        for k, nodes in ev.decision.groups:
            if key is not None and k == key:
                dissent = tuple(n for kk, ns in ev.decision.groups if kk != k for n in ns)
                for n in dissent:
                    self.sched.flag(n)
                return self._accepted(ds.Accepted(ev.index, q.Accept(k, nodes, dissent),
                                                  ev.attempts), settled="reexec")
        self.reported.add(ev.index)
        self.emit({"v": 1, "type": "disputed", "index": ev.index, "line": line, "job": job.id,
                   "replicas": self.sched.replicas, "quorum": self.sched.quorum,
                   "receipts": [io.receipt_summary(outs[n])
                                for _, nodes in ev.decision.groups for n in nodes]})
        self.emit({"v": 1, "type": "error", "error": "disputed", "index": ev.index,
                   "line": line, "job": job.id, "exit_code": exitcodes.REJECTED,
                   "message": f"no {self.sched.quorum} of the {self.sched.replicas} receipts "
                              "agree on the output",
                   "hint": "see the disputed record's receipts; --deterministic "
                           "--settle=reexec re-runs the job here to decide"})
        self._note(exitcodes.REJECTED)
        return [self._entry(ev.index, outs[n], "disputed", None, [])
                for _, nodes in ev.decision.groups for n in nodes]

    def _failed(self, ev: ds.Failed) -> None:
        line, job = self.jobs[ev.index]
        errs = self._errors.get(ev.index, {})
        code, slug, message, extra = exitcodes.UNAVAILABLE, ev.slug, ev.message, {}
        if ev.slug == "deadline":  # --job-deadline: a later try may do
            code = exitcodes.TEMPFAIL
        elif ev.slug not in ("unavailable", "no_quorum"):  # the job itself was refused
            code = next((e.exit_code for e in errs.values() if e.slug == ev.slug),
                        exitcodes.REJECTED)
        elif (refused := refused_module(list(errs.values()), "tried")) is not None:
            # every node asked could not compile the module: say it as a local run would
            code, slug, message = refused.exit_code, refused.slug, refused.message
            extra = {"hint": refused.hint} if refused.hint else {}
        self.reported.add(ev.index)
        self.emit({"v": 1, "type": "error", "error": slug, "message": message,
                   "exit_code": code, "index": ev.index, "line": line, "job": job.id,
                   "attempts": [{"node": n, "error": s} for n, s in ev.errors], **extra})
        self._note(code)
        self._errors.pop(ev.index, None)

    def _agreeing(self, index: int, key: q.Key) -> list[str]:
        return [n for n, o in self.outcomes.get(index, {}).items() if q.vote_of(o.body) == key]

    def _entry(self, index: int, out: Outcome, verdict: str, accepted: q.Key | None,
               agreeing: list[str]) -> dict[str, Any]:
        from phase_core import envelope

        return entry(out.body["job"], out.worker, self.nodes.addresses.get(out.worker, ""),
                     verdict, q.vote_of(out.body), envelope.parse(out.receipt).id,
                     accepted, agreeing)

    def _note(self, code: int) -> None:
        self.status = exitcodes.worst(self.status, code)


def _classify(e: PhaseError) -> str:
    from plasmd.dispatchnodes import classify

    return classify(e)
