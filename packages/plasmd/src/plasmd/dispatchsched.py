"""The dispatcher's decisions, sans I/O: which job goes to which node, and when.

``Scheduler`` holds no sockets, tasks or clock: the caller tells it what
happened (a job read, a node found, an attempt that ended, with ``now`` passed
in) and asks it what to do (``placements``); each answer is a list of events.
The asyncio shell is ``plasmd.dispatch``; the algorithm is in docs/dispatch.md.

Per node: a window of jobs in flight (``window``, at most ``capacity``),
grown by one per window of answers that came back without the latency rising
(additive increase), halved on ``queue_full`` or a timeout (multiplicative
decrease). A node that fails twice in a row (unreachable, timed out, broke the
protocol, a receipt that does not verify) is down for a back-off period.

Per job: ``replicas`` placements on distinct nodes (and distinct hosts with
``distinct_hosts``), each retried elsewhere when it fails, within
``max_attempts`` placements in all; ``quorum.decide`` says when it is settled.
A node never gets the same job twice (a ``queue_full`` refusal is not a run
and does not count), unless ``same_node_retry`` and no other node is left.
With ``deadline_s``, a job not settled that long after it was read fails with
``deadline`` (its attempts still running are left to end; their answers no
longer count).
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from plasmd import quorum as q
from plasmd.dispatchevents import (
    Accepted,
    Disputed,
    Dissent,
    Event,
    Failed,
    Place,
    Retired,
)

__all__ = ["BUSY", "JOB_BAD", "KINDS", "NODE_FAULT", "REFUSED", "Accepted", "Disputed",
           "Dissent", "Event", "Failed", "Node", "Place", "Retired", "Scheduler", "Task",
           "site_of"]

# failure kinds the caller reports
BUSY = "busy"  # queue_full: not a run, back off this node
REFUSED = "refused"  # the node would not run it (capabilities, keyring): not this node
JOB_BAD = "job_bad"  # the job itself is bad (bad signature, expired): no retry anywhere
NODE_FAULT = "node_fault"  # unreachable, timed out, protocol, bad receipt: retry elsewhere
KINDS = (BUSY, REFUSED, JOB_BAD, NODE_FAULT)

DOWN_AFTER = 2  # consecutive faults
DOWN_FOR_S = 30.0  # first back-off; doubles each time


def site_of(host: str) -> str:
    """What ``distinct_hosts`` compares (docs/dispatch.md): an IPv4 address whole
    (also one written as IPv4-mapped IPv6), an IPv6 address by its /64 (what one
    host, or one customer, is usually given), anything else as written, in lower
    case."""
    import ipaddress

    try:
        ip = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return host.lower()
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass
class Node:
    id: str
    host: str  # its site (``site_of``): two nodes at one site are one host
    capacity: int
    caps: dict[str, Any] | None = None  # signed capabilities from its node record
    window: float = 2.0
    in_flight: int = 0
    rtt_min: float | None = None
    rtt_ewma: float | None = None
    faults: int = 0
    downs: int = 0
    down_until: float = 0.0
    flagged: int = 0  # disagreements on record (the log, and this run)
    acked: float = 0.0  # answers since the window last grew

    def room(self) -> int:
        return max(0, int(self.window) - self.in_flight)


@dataclass
class Task:
    index: int
    job_id: str
    requirements: dict[str, Any]
    attempts: int = 0
    tried: set[str] = field(default_factory=set)
    hosts: set[str] = field(default_factory=set)
    running: set[str] = field(default_factory=set)
    votes: list[q.Vote] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (node, slug)
    accepted: q.Key | None = None
    ended: bool = False  # its final event was given
    deadline: float | None = None  # when it fails unsettled (``deadline_s``)




class Scheduler:
    def __init__(self, *, replicas: int = 1, quorum: int = 1, max_attempts: int | None = None,
                 distinct_hosts: bool = False, same_node_retry: bool = False,
                 max_pending: int = 256, avoid_flagged: int = 3,
                 fits: Callable[[dict[str, Any], dict[str, Any] | None], bool] | None = None,
                 deadline_s: float | None = None) -> None:
        why = q.check_params(replicas, quorum)
        if why is not None:
            raise ValueError(why)
        self.replicas, self.quorum = replicas, quorum
        self.max_attempts = max_attempts if max_attempts is not None else replicas + 3
        if self.max_attempts < replicas:
            raise ValueError("--max-attempts cannot be below --replicas")
        self.distinct_hosts = distinct_hosts
        self.same_node_retry = same_node_retry
        self.max_pending = max_pending
        self.avoid_flagged = avoid_flagged
        self.fits = fits or (lambda _req, _caps: True)
        if deadline_s is not None and deadline_s <= 0:
            raise ValueError("--job-deadline must be positive")
        self.deadline_s = deadline_s
        self.nodes: dict[str, Node] = {}
        self.tasks: dict[int, Task] = {}
        self.ready: collections.deque[int] = collections.deque()  # tasks wanting a placement
        self.discovering = False  # more nodes may come: a task with no node left waits

    # -- input --------------------------------------------------------------------
    def add_node(self, node_id: str, host: str, *, capacity: int = 16,
                 caps: dict[str, Any] | None = None, flagged: int = 0) -> None:
        if node_id in self.nodes:
            return
        capacity = max(1, capacity)
        self.nodes[node_id] = Node(node_id, site_of(host), capacity, caps,
                                   window=float(max(1, min(capacity, capacity // 2 or 1))),
                                   flagged=flagged)

    def wants_input(self) -> bool:
        """Read another job? Only while fewer than ``max_pending`` jobs are live and
        the jobs waiting for a placement would not fill every free slot."""
        if len(self.tasks) >= self.max_pending:
            return False
        waiting = len(self.ready)
        if waiting <= 1:
            return True
        free = 0
        for n in self.nodes.values():
            if n.flagged < self.avoid_flagged:
                free += max(0, int(n.window) - n.in_flight)
                if free >= waiting:
                    return True
        return False

    def add_job(self, index: int, job_id: str, requirements: dict[str, Any],
                now: float = 0.0) -> None:
        if index in self.tasks:
            raise ValueError(f"job index {index} given twice")
        self.tasks[index] = Task(index, job_id, requirements, deadline=(
            now + self.deadline_s if self.deadline_s is not None else None))
        self.ready.append(index)

    def next_deadline(self) -> float | None:
        """When the next live job's deadline passes (the caller wakes up then)."""
        return min((t.deadline for t in self.tasks.values() if t.deadline is not None
                    and not t.ended and t.accepted is None), default=None)

    def expire(self, now: float) -> list[Event]:
        """Fail every job whose deadline passed unsettled (``placements`` asks first)."""
        out: list[Event] = []
        for t in list(self.tasks.values()):
            if (t.deadline is None or t.deadline > now or t.ended
                    or t.accepted is not None):
                continue
            self.ready = collections.deque(i for i in self.ready if i != t.index)
            out += self._fail(t, "deadline",
                              f"the job did not settle within its deadline of "
                              f"{self.deadline_s:g} s (--job-deadline), after {t.attempts} "
                              f"attempt(s), {len(t.votes)} of {self.quorum} agreeing "
                              f"receipts",
                              cut=tuple((n, "deadline") for n in sorted(t.running)))
        return out

    @property
    def live(self) -> int:
        return len(self.tasks)

    # -- placing ------------------------------------------------------------------
    def placements(self, now: float) -> list[Event]:
        """Every placement that has room now, and the jobs that can never be placed
        (or whose deadline passed)."""
        out: list[Event] = self.expire(now)
        keep: collections.deque[int] = collections.deque()
        usable = self._usable(now)
        free = sum(n.room() for n in usable)
        while self.ready:
            i = self.ready.popleft()
            t = self.tasks.get(i)
            if t is None or t.ended or t.accepted is not None:
                continue
            wanted = self.replicas - len(t.votes) - len(t.running)
            while wanted > 0 and free > 0 and t.attempts < self.max_attempts:
                node = self._best(t, usable, now)
                if node is None:
                    break
                self._start(t, node)
                out.append(Place(i, node.id))
                wanted -= 1
                free -= 1
            if wanted > 0 and not t.ended:
                if t.attempts >= self.max_attempts or not self._could_place(t, now):
                    out.extend(self._settle(t, now, exhausted=True))
                else:
                    keep.append(i)
        self.ready = keep
        return out

    def _usable(self, now: float, ignore_down: bool = False) -> list[Node]:
        return [n for n in self.nodes.values()
                if (ignore_down or n.down_until <= now) and n.flagged < self.avoid_flagged]

    def _eligible(self, t: Task, n: Node, now: float) -> bool:
        if n.down_until > now or n.flagged >= self.avoid_flagged or n.id in t.running:
            return False
        if n.id in t.tried and not (self.same_node_retry and not self._others_left(t, now)):
            return False
        if self.distinct_hosts and n.host in t.hosts:
            return False
        return self.fits(t.requirements, n.caps)

    def _others_left(self, t: Task, now: float) -> bool:
        return any(n.id not in t.tried and n.down_until <= now and n.flagged < self.avoid_flagged
                   and self.fits(t.requirements, n.caps) for n in self.nodes.values())

    def _best(self, t: Task, usable: list[Node], now: float) -> Node | None:
        best: Node | None = None
        best_score: tuple[float, ...] = ()
        for n in usable:
            if int(n.window) <= n.in_flight or not self._eligible(t, n, now):
                continue
            score = (n.flagged, n.in_flight / n.window, n.rtt_ewma or 0.0)
            if best is None or score < best_score:
                best, best_score = n, score
        return best

    def _could_place(self, t: Task, now: float) -> bool:
        """Some node could take this job, now or once it has room (or one may come)."""
        return self.discovering or any(self._eligible(t, n, now) for n in self.nodes.values())

    def _start(self, t: Task, n: Node) -> None:
        t.attempts += 1
        t.running.add(n.id)
        t.tried.add(n.id)
        t.hosts.add(n.host)
        n.in_flight += 1

    # -- answers ------------------------------------------------------------------
    def on_result(self, index: int, node_id: str, key: q.Key, latency_s: float,
                  now: float) -> list[Event]:
        """A replica ended with a verified receipt whose vote is ``key``."""
        t, n = self.tasks[index], self.nodes[node_id]
        self._end(t, n)
        n.faults = 0
        self._grow(n, latency_s)
        if t.ended:
            return self._retire_if_idle(t)
        if t.accepted is not None:  # a late replica: compare it, nothing more
            out: list[Event] = []
            if key != t.accepted:
                n.flagged += 1
                out.append(Dissent(index, node_id, key, t.accepted))
            return out + self._retire_if_idle(t)
        t.votes.append(q.Vote(node_id, key))
        return self._settle(t, now)

    def on_failure(self, index: int, node_id: str, kind: str, slug: str,
                   now: float) -> list[Event]:
        """A replica ended without a verified receipt."""
        if kind not in KINDS:
            raise ValueError(f"unknown failure kind {kind!r}")
        t, n = self.tasks[index], self.nodes[node_id]
        self._end(t, n)
        t.errors.append((node_id, slug))
        if kind == BUSY:
            n.window = max(1.0, n.window / 2)
            t.tried.discard(node_id)  # it did not run there: it may go back
            t.hosts = {self.nodes[x].host for x in t.running | {v.node for v in t.votes}}
        elif kind == NODE_FAULT:
            n.window = max(1.0, n.window / 2)
            n.faults += 1
            if n.faults >= DOWN_AFTER:
                n.down_until = now + DOWN_FOR_S * 2 ** n.downs
                n.downs += 1
                n.faults = 0
        if t.accepted is not None or t.ended:
            return self._retire_if_idle(t)
        if kind == JOB_BAD:
            return self._fail(t, slug, f"the job was refused: {slug}")
        return self._settle(t, now)

    def flag(self, node_id: str) -> None:
        """A disagreement seen outside the scheduler (a dispute settled by re-execution)."""
        if node_id in self.nodes:
            self.nodes[node_id].flagged += 1

    def _end(self, t: Task, n: Node) -> None:
        t.running.discard(n.id)
        n.in_flight -= 1

    def _grow(self, n: Node, latency_s: float) -> None:
        n.rtt_min = latency_s if n.rtt_min is None else min(n.rtt_min, latency_s)
        n.rtt_ewma = latency_s if n.rtt_ewma is None else 0.8 * n.rtt_ewma + 0.2 * latency_s
        n.acked += 1
        if n.acked >= n.window:
            n.acked = 0
            if n.rtt_ewma <= 3 * n.rtt_min + 0.005:  # no queue building up at the node
                n.window = min(float(n.capacity), n.window + 1)
            elif n.window > 1:
                n.window -= 1

    def _settle(self, t: Task, now: float, exhausted: bool = False) -> list[Event]:
        left = 0 if exhausted else self.max_attempts - t.attempts
        possible = len(t.running) + min(left, self.replicas - len(t.votes) - len(t.running))
        if (possible > len(t.running) and len(t.votes) < self.quorum
                and not self._could_place(t, now)):
            possible = len(t.running)
        d = q.decide(t.votes, self.quorum, max(0, possible))
        if isinstance(d, q.Accept):
            t.accepted = d.key
            for x in d.dissenting:
                self.nodes[x].flagged += 1
            return [Accepted(t.index, d, t.attempts), *self._retire_if_idle(t)]
        if isinstance(d, q.Pending):
            if (not exhausted and t.index not in self.ready
                    and len(t.votes) + len(t.running) < self.replicas):
                self.ready.append(t.index)
            return []
        if t.running:  # a vote may still come: wait for it
            return []
        if isinstance(d, q.Disputed):
            t.ended = True
            return [Disputed(t.index, d, t.attempts), Retired(t.index)] if self._pop(t) else []
        if self._could_place(t, now):
            why = f"{t.attempts} attempts, the cap"
        elif self.nodes and all(n.flagged >= self.avoid_flagged for n in self.nodes.values()):
            why = "every node is avoided for its disagreements on record (--avoid-after)"
        else:
            why = "no node left to try"
        return self._fail(t, "no_quorum" if t.votes else "unavailable",
                          f"{len(t.votes)} of {self.quorum} agreeing receipts ({why})")

    def _fail(self, t: Task, slug: str, message: str,
              cut: tuple[tuple[str, str], ...] = ()) -> list[Event]:
        """The job fails; ``cut``: its attempts still running, stopped by the caller."""
        t.ended = True
        ev: list[Event] = [Failed(t.index, slug, message, (*t.errors, *cut))]
        if not t.running and self._pop(t):
            ev.append(Retired(t.index))
        return ev

    def _retire_if_idle(self, t: Task) -> list[Event]:
        if t.running or not (t.ended or t.accepted is not None):
            return []
        return [Retired(t.index)] if self._pop(t) else []

    def _pop(self, t: Task) -> bool:
        return self.tasks.pop(t.index, None) is not None
