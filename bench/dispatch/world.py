"""The simulated network a dispatcher spreads jobs over: nodes, their capacity, their
round-trip times, their lifetimes (churn) and who lies.

Round trips (dispatcher to node): ``lognormal`` (the default) gives each node a base RTT
drawn log-normal with a median of 80 ms and sigma 0.6 (p10 37 ms, p90 173 ms, p99 323 ms,
0.1 % above 500 ms), and each message that base times 1 + an exponential jitter of mean
5 %. That is the shape measurement studies of internet delay report: per path a
unimodal, right-skewed distribution tight around its mode; across paths a long right
tail, with the averages of over 99 % of host pairs below 500 ms. It is chosen to that
shape, not fitted to a data set. ``uniform`` is the discovery simulator's wire
(``bench/discovery/simnet.py``: every message 10-120 ms, uniform), for comparison.

Churn: a node's session is exponential with mean ``session_s`` (memoryless, so nodes
alive at the start have the same residual life); a node that dies is replaced at once by
a fresh one, so the population stays at ``nodes``. A dead node's record stays in the DHT
until it expires (30-60 min after its owner's last republish: docs/discovery.md), so
the dispatcher's view keeps it that long unless a dial to it fails first.
"""

from __future__ import annotations

import math
import random
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "discovery"))
import simnet
from quorum import RIGHT, Tally

INF = math.inf
UNIFORM_RTT_S = simnet.Sim(0).latency_s  # (0.01, 0.12)

# capacity: cores (= slots a dispatcher keeps in flight) and memory tiers
CORES = ((1, 0.10), (2, 0.30), (4, 0.35), (8, 0.20), (16, 0.05))
MEMORY_GIB = ((2, 0.10), (4, 0.25), (8, 0.35), (16, 0.20), (32, 0.10))
JOB_MEMORY_GIB = ((1, 0.70), (4, 0.20), (16, 0.10))


@dataclass
class Params:
    nodes: int = 10_000
    jobs: int = 100_000
    replicas: int = 1
    quorum: int = 1
    liars: float = 0.05  # share of nodes (and of joining nodes) that lie
    lie_rate: float = 1.0  # a liar lies on this share of its jobs
    collude: float = 0.0  # share of lies that are the colluders' common wrong output
    liar_speed: float = 1.0  # a lie takes this share of the honest run time
    session_s: float = 0.0  # mean node session (exponential); 0: no churn
    launch: str = "all"  # all: N replicas at once; quorum: K, more only on disagreement
    dispute: str = "report"  # report | extend | reexec
    max_attempts: int = 8  # attempts per job, dials to dead nodes included
    deadline_s: float = 7200.0  # per job, from its first placement
    avoid: bool = False  # never pick again a node that disagreed with an accepted output
    rtt: str = "lognormal"  # lognormal | uniform
    work_median_s: float = 60.0  # a job's run time on a node of speed 1: log-normal
    work_sigma: float = 1.0
    speed_sigma: float = 0.3  # node speed factor: log-normal, median 1
    refresh_s: float = 300.0  # the dispatcher re-runs discovery this often
    window: int = 1000  # jobs read but not fully placed, at most (backpressure)
    seed: int = 1

    def check(self) -> None:
        if not 1 <= self.quorum <= self.replicas <= self.max_attempts:
            raise ValueError("need 1 <= quorum <= replicas <= max-attempts")
        if self.dispute not in ("report", "extend", "reexec"):
            raise ValueError("dispute is report, extend or reexec")
        if self.launch not in ("all", "quorum"):
            raise ValueError("launch is all or quorum")
        if self.rtt not in ("lognormal", "uniform"):
            raise ValueError("rtt is lognormal or uniform")
        for name in ("liars", "lie_rate", "collude"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be within [0, 1]")
        if self.nodes < self.replicas or self.jobs < 1:
            raise ValueError("need at least replicas nodes and one job")


def _weighted(rng: random.Random, table: tuple[tuple[int, float], ...]) -> int:
    r = rng.random()
    for value, share in table:
        r -= share
        if r < 0:
            return value
    return table[-1][0]


def tier_of(gib: int) -> int:
    return [g for g, _ in MEMORY_GIB].index(gib)


def job_tier(gib: int) -> int:
    """The lowest memory tier that can run a job needing ``gib``."""
    return next(i for i, (g, _) in enumerate(MEMORY_GIB) if g >= gib)


class Node:
    __slots__ = ("alive", "busy", "dies", "idx", "in_view", "known_dead", "liar",
                 "rtt", "slots", "speed", "tier", "warm")

    def __init__(self, idx: int, rng: random.Random, p: Params, now: float) -> None:
        self.idx = idx
        self.slots = _weighted(rng, CORES)
        self.tier = tier_of(_weighted(rng, MEMORY_GIB))
        self.speed = math.exp(rng.gauss(0, p.speed_sigma))
        self.rtt = math.exp(rng.gauss(math.log(0.08), 0.6))
        self.liar = rng.random() < p.liars
        self.dies = now + rng.expovariate(1 / p.session_s) if p.session_s > 0 else INF
        self.alive = True
        self.in_view = False  # the dispatcher knows it (from discovery)
        self.known_dead = False  # the dispatcher saw it fail
        self.busy = 0  # attempts the dispatcher has in flight on it
        self.warm = False  # the dispatcher holds a connection to it


class Rtt:
    """Round-trip samples for a node."""

    def __init__(self, kind: str, rng: random.Random) -> None:
        self.kind = kind
        self.rng = rng

    def sample(self, node: Node) -> float:
        if self.kind == "uniform":
            return self.rng.uniform(*UNIFORM_RTT_S)
        return node.rtt * (1 + self.rng.expovariate(20.0))


def work(rng: random.Random, p: Params) -> tuple[float, int]:
    """A job: its run time on a node of speed 1, and the memory tier it needs."""
    return (p.work_median_s * math.exp(rng.gauss(0, p.work_sigma)),
            job_tier(_weighted(rng, JOB_MEMORY_GIB)))


def record_linger(rng: random.Random) -> float:
    """How long a dead node's record stays findable: until it expires, 30-60 min."""
    return rng.uniform(1800.0, 3600.0)


# -- jobs and attempts, as the dispatcher tracks them ------------------------------------

RUNNING, DONE, GONE = range(3)
REASONS = ("first", "replica", "churn", "dispute")


class Job:
    __slots__ = ("attempts", "disputed", "done", "idx", "outcome", "outstanding",
                 "pending", "queued", "results", "running", "t_end", "t_first", "tally",
                 "target", "tier", "used", "work")

    def __init__(self, idx: int, run_s: float, tier: int, p: Params) -> None:
        self.idx, self.work, self.tier = idx, run_s, tier
        self.tally = Tally(p.quorum)
        self.target = p.replicas
        first = p.replicas if p.launch == "all" else p.quorum
        self.pending = ["first"] + ["replica"] * (first - 1)  # launches to make
        self.attempts = self.outstanding = 0
        self.used: set[int] = set()
        self.running: list[Attempt] = []
        self.results: list[tuple[int, int]] = []  # (node, output)
        self.t_first = self.t_end = -1.0
        self.done = self.queued = self.disputed = False
        self.outcome = ""


class Attempt:
    __slots__ = ("end", "job", "node", "output", "reason", "rtt", "start", "state")

    def __init__(self, job: Job, node: Node, reason: str) -> None:
        self.job, self.node, self.reason = job, node, reason
        self.state = RUNNING
        self.start = self.end = INF  # when it runs on the node (INF: it never starts)
        self.rtt = 0.0
        self.output = RIGHT
