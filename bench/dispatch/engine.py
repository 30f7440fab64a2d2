"""The dispatcher under simulation, in virtual time (an event queue, no sleeping). It reads
jobs one at a time, only while it has a free slot somewhere and fewer than ``window``
jobs waiting for replicas (backpressure). Each job gets ``replicas`` attempts on
distinct nodes picked at random among the free nodes its memory needs allow
(``quorum.FreePool``), never a node it already tried; a node runs at most ``slots`` of
the dispatcher's attempts at once. An attempt costs a handshake round trip on a first
contact, half a round trip each way, and the job's run time on that node. A node that
died before the result left loses the attempt: the dispatcher notices when the QUIC idle
timeout fires (or, dialling a node it never reached, at the handshake timeout: both from
``phase_core.aio.stream.Limits``) and runs it again elsewhere, up to ``max_attempts``
per job and ``deadline_s`` from the first placement. The first output ``quorum`` results
agree on is accepted; the attempts still running are cancelled. All results in and no
quorum: a dispute (``report``: the job ends ``disputed``; ``extend``: as many more
replicas as the largest group is short of a quorum; ``reexec``: the dispatcher runs the
job itself and accepts its own output).
"""

from __future__ import annotations

import heapq
import random
from collections import Counter, deque
from typing import Any

import world
from quorum import COLLUDED, RIGHT, FreePool
from world import INF, Attempt, Job, Node, Params, Rtt

from phase_core.aio.stream import Limits

RESULT, LOST, DEATH, REFRESH, DEADLINE, SETTLED = range(6)
RUNNING, DONE, GONE = world.RUNNING, world.DONE, world.GONE


class Dispatcher:
    def __init__(self, p: Params) -> None:
        p.check()
        self.p = p
        self.rng = random.Random(p.seed)
        self.rtt = Rtt(p.rtt, self.rng)
        lim = Limits()
        self.dial_s, self.idle_s = lim.handshake_timeout_s, lim.idle_timeout_s
        self.pool = FreePool(len(world.MEMORY_GIB))
        self.heap: list[tuple[float, int, int, Any]] = []
        self.seq = 0
        self.now = 0.0
        self.nodes: list[Node] = []
        self.joined: list[Node] = []  # not yet found by discovery
        self.forget: list[tuple[float, Node]] = []  # (record expiry, dead node in view)
        self.banned: set[int] = set()
        self.waiting: deque[Job] = deque()
        self.jobs: list[Job] = []
        self.finished = 0
        self.lies = 0  # distinct wrong outputs handed out
        self.execs: Counter[str] = Counter()
        self.seconds: Counter[str] = Counter()  # base seconds (node seconds / node speed)
        self.wasted_lost = self.wasted_cancelled = 0.0
        self.dials_failed = self.deaths = self.liar_execs = 0
        for _ in range(p.nodes):
            self._spawn().in_view = True
        self.joined.clear()
        liars = set(self.rng.sample(range(p.nodes), int(p.nodes * p.liars)))
        for node in self.nodes:  # exactly that share at the start; joiners by chance
            node.liar = node.idx in liars
            self._free(node)

    # -- plumbing ---------------------------------------------------------------------

    def _push(self, t: float, kind: int, obj: Any) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, kind, obj))

    def _spawn(self) -> Node:
        node = Node(len(self.nodes), self.rng, self.p, self.now)
        self.nodes.append(node)
        self.joined.append(node)
        if node.dies < INF:
            self._push(node.dies, DEATH, node)
        return node

    def _free(self, node: Node) -> None:
        """Into the pool if the dispatcher would pick it now, else out."""
        if node.in_view and not node.known_dead and node.busy < node.slots \
                and node.idx not in self.banned:
            self.pool.add(node.idx, node.tier)
        else:
            self.pool.remove(node.idx)

    def _output(self, node: Node) -> int:
        if not node.liar or self.rng.random() >= self.p.lie_rate:
            return RIGHT
        if self.rng.random() < self.p.collude:
            return COLLUDED
        self.lies += 1
        return self.lies

    # -- placing ------------------------------------------------------------------------

    def _place(self, job: Job, node: Node, reason: str) -> None:
        att = Attempt(job, node, reason)
        job.attempts += 1
        job.outstanding += 1
        job.used.add(node.idx)
        job.running.append(att)
        if job.t_first < 0:
            job.t_first = self.now
            self._push(self.now + self.p.deadline_s, DEADLINE, job)
        node.busy += 1
        self._free(node)
        if not node.alive:  # a node that left: the dial (or the open connection) times out
            when = node.dies + self.idle_s if node.warm else self.now + self.dial_s
            self._push(max(when, self.now), LOST, att)
            return
        hs = 0.0 if node.warm else self.rtt.sample(node)
        node.warm = True
        att.rtt = self.rtt.sample(node)
        att.output = self._output(node)
        dur = job.work * node.speed * (self.p.liar_speed if att.output != RIGHT else 1.0)
        att.start = self.now + hs + att.rtt / 2
        att.end = att.start + dur
        if node.dies < att.start:  # gone before the request arrived: no execution
            att.start = att.end = INF
            self._push(node.dies + self.idle_s, LOST, att)
            return
        self.execs[reason] += 1
        self.liar_execs += node.liar
        if node.dies < att.end + att.rtt / 2:
            self._push(node.dies + self.idle_s, LOST, att)
        else:
            self._push(att.end + att.rtt / 2, RESULT, att)

    def _place_some(self, job: Job) -> None:
        while job.pending:
            idx = self.pool.pick(self.rng, job.tier, job.used)
            if idx is None:
                return
            self._place(job, self.nodes[idx], job.pending.pop(0))  # type: ignore[index]

    def pump(self) -> None:
        """Place what waits (oldest first), then read new jobs while there is room."""
        pool, p = self.pool, self.p
        for _ in range(len(self.waiting)):
            if not len(pool):
                return
            job = self.waiting.popleft()
            if job.done or not job.pending:
                job.queued = False
                continue
            self._place_some(job)
            if job.pending:
                self.waiting.append(job)
            else:
                job.queued = False
        while len(pool) and len(self.jobs) < p.jobs and len(self.waiting) < p.window:
            run_s, tier = world.work(self.rng, p)
            job = Job(len(self.jobs), run_s, tier, p)
            self.jobs.append(job)
            self._place_some(job)
            if job.pending:
                job.queued = True
                self.waiting.append(job)

    def _want(self, job: Job, reason: str, count: int = 1) -> None:
        room = self.p.max_attempts - job.attempts - len(job.pending)
        job.pending += [reason] * max(0, min(count, room))
        if job.pending and not job.queued:
            job.queued = True
            self.waiting.appendleft(job)  # ahead of new input

    # -- events -------------------------------------------------------------------------

    def _ran(self, att: Attempt, until: float) -> float:
        """Base seconds (node seconds / node speed) the attempt ran until ``until``."""
        ran = min(until, att.end, att.node.dies) - att.start
        return max(0.0, ran) / att.node.speed

    def on_result(self, att: Attempt) -> None:
        job, node = att.job, att.node
        att.state = DONE
        job.outstanding -= 1
        node.busy -= 1
        self._free(node)
        self.seconds[att.reason] += self._ran(att, INF)
        job.results.append((node.idx, att.output))
        won = job.tally.add(att.output)
        if won is not None:
            self._finish(job, won, "accepted")
        else:
            self._advance(job)

    def on_lost(self, att: Attempt) -> None:
        job, node = att.job, att.node
        att.state = GONE
        job.outstanding -= 1
        node.busy -= 1
        node.known_dead = True
        self.dials_failed += att.start == INF
        self._free(node)
        lost = self._ran(att, INF)
        self.seconds[att.reason] += lost
        self.wasted_lost += lost
        self._want(job, "churn")
        self._advance(job)

    def _advance(self, job: Job) -> None:
        """After a result or a loss: what is left to do for ``job``."""
        if job.done or job.outstanding or job.pending:
            return
        if job.tally.results < job.target:
            if self.p.launch == "quorum":  # no quorum yet: only what it still lacks
                self._want(job, "replica", min(job.tally.short(),
                                               job.target - job.tally.results))
                if job.pending:
                    return
            self._finish(job, None, "failed")  # attempts used up by losses
            return
        job.disputed = True
        if self.p.dispute == "reexec":
            job.pending.clear()
            job.outstanding += 1  # the dispatcher's own run
            self.execs["dispute"] += 1
            self.seconds["dispute"] += job.work
            self._push(self.now + job.work, SETTLED, job)
            return
        if self.p.dispute == "extend" and job.attempts < self.p.max_attempts:
            short = job.tally.short()
            job.target += short
            self._want(job, "dispute", short)
            return
        self._finish(job, None, "disputed")

    def _finish(self, job: Job, output: int | None, how: str) -> None:
        job.done = True
        job.t_end = self.now
        job.pending.clear()
        if output is None:
            job.outcome = how
        else:
            job.outcome = "right" if output == RIGHT else "wrong"
        for att in job.running:
            if att.state != RUNNING:
                continue
            att.state = GONE  # cancelled: the node stops when the cancel arrives
            att.node.busy -= 1
            self._free(att.node)
            if att.start < INF:
                part = self._ran(att, self.now + att.rtt / 2)
                self.seconds[att.reason] += part
                self.wasted_cancelled += part
        job.running = []
        if self.p.avoid and output is not None:
            for idx, out in job.results:
                if out != output:
                    self.banned.add(idx)
                    self.pool.remove(idx)
        self.finished += 1

    def on_death(self, node: Node) -> None:
        node.alive = False
        self.deaths += 1
        if node.in_view:
            self.forget.append((self.now + world.record_linger(self.rng), node))
        self._spawn()  # someone else joins

    def on_refresh(self) -> None:
        """Discovery again: joined nodes appear, dead ones whose record expired vanish."""
        for node in self.joined:
            if node.alive:
                node.in_view = True
                self._free(node)
        self.joined.clear()
        keep = []
        for t, node in self.forget:
            if t <= self.now:
                node.in_view = False
                self._free(node)
            else:
                keep.append((t, node))
        self.forget = keep
        self._push(self.now + self.p.refresh_s, REFRESH, None)

    def run(self) -> Dispatcher:
        self._push(self.p.refresh_s, REFRESH, None)
        self.pump()
        handlers = {RESULT: self.on_result, LOST: self.on_lost, DEATH: self.on_death}
        while self.finished < self.p.jobs:
            if not self.heap or self.heap[0][0] > 1e8:
                raise RuntimeError("the simulation stalled: jobs no node can run")
            self.now, _, kind, obj = heapq.heappop(self.heap)
            if kind == REFRESH:
                self.on_refresh()
            elif kind in (DEADLINE, SETTLED):
                if not obj.done:
                    self._finish(obj, RIGHT if kind == SETTLED else None, "failed")
            elif kind == DEATH:
                self.on_death(obj)
                continue
            elif obj.state == RUNNING:
                handlers[kind](obj)
            self.pump()
        return self
