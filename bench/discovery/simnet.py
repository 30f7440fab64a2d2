"""An in-process network simulator that drives the real sans-I/O DHT code.

Every node is a ``phase_core.protocol.dht_node.DhtNode`` (routing table, store,
rate limits, message parsing); lookups are ``dht_lookup.Lookup`` state machines
and GET results go through ``dht_store.Collector`` (real Ed25519 verification).
Only the wire is simulated: each request is delivered as the same dict the
transport would carry, with a per-message latency, a loss probability and a
request timeout, in virtual time (an event queue per lookup; no sleeping).

Scenarios: ``churn`` kills that fraction of the nodes without telling anyone
(they stay in routing tables) and joins as many fresh nodes; ``liars`` turns
that fraction of the surviving nodes malicious: they answer FIND_NODE with
``k`` fabricated contacts right next to the target (nobody is there), and GET
with forged records (a good record's body with another signature, a tampered
body, a record naming another node, garbage) plus fabricated contacts.

Deterministic for a given seed. Used by ``bench_discovery.py`` (10,000 nodes)
and by ``tests/phase_core/dht/test_simulation.py`` (2,000 nodes).
"""

from __future__ import annotations

import bisect
import copy
import heapq
import math
import random
import statistics
from dataclasses import dataclass, field
from typing import Any

from phase_core import envelope, records
from phase_core.identity import Identity
from phase_core.protocol import dht_node
from phase_core.protocol.dht import (
    ID_BITS,
    PATHS,
    SUBNET_LIMIT,
    Contact,
    K,
    key_id,
    node_key,
    subnets,
)
from phase_core.protocol.dht_lookup import Lookup
from phase_core.protocol.dht_node import DhtNode, RateLimiter, parse_answer
from phase_core.protocol.dht_rtt import RttTracker
from phase_core.protocol.dht_store import Collector

NOW = 1_900_000_000  # a fixed virtual wall clock for record validity
CAPS = {"arch": "x86_64", "cpu_cores": 4, "memory_bytes": 8 << 30,
        "runtimes": [{"name": "wasmtime", "version": "50.0.1"}], "features": ["fuel"]}


@dataclass
class SimNode:
    ident: Identity
    dht: DhtNode
    contact: Contact
    alive: bool = True
    liar: bool = False
    sybil: bool = False  # an eclipse attacker's node (see eclipse.py)


@dataclass
class LookupResult:
    ok: bool
    hops: int
    messages: int
    time_s: float
    forged_accepted: int = 0
    forged_seen: int = 0


@dataclass
class Sim:
    n: int
    seed: int = 1
    latency_s: tuple[float, float] = (0.01, 0.12)
    loss: float = 0.01
    timeout_s: float = 1.0
    paths: int = PATHS
    subnet_limit: int | None = SUBNET_LIMIT
    adaptive: bool = True  # per-contact timeouts from observed RTT (else timeout_s always)
    quorum: int = 2  # a GET ends when this many holders returned the wanted record (0: never)
    rng: random.Random = field(init=False)
    nodes: list[SimNode] = field(default_factory=list)
    by_id: dict[str, SimNode] = field(default_factory=dict)
    published: dict[str, dict[str, Any]] = field(default_factory=dict)  # node id -> envelope
    legit_ids: set[str] = field(default_factory=set)  # every document id honestly signed
    messages: int = 0
    maintenance: int = 0  # replication pushes (not counted in a lookup's messages)
    attack: Any = None  # an eclipse.Attack answering for the sybil nodes
    replicate: bool = True  # holders push records to new close nodes
    first_holders: dict[str, list[str]] = field(default_factory=dict)  # key -> its holders

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    # -- building ---------------------------------------------------------------

    def _new_node(self, addr: str | None = None, ident: Identity | None = None) -> SimNode:
        ident = ident or Identity(self.rng.randbytes(32))
        if addr is None:  # a public address, nearly always in a /24 of its own
            r = self.rng.getrandbits(32)
            addr = f"{11 + r % 89}.{(r >> 8) & 255}.{(r >> 16) & 255}.{(r >> 24) | 1}:4433"
        node = SimNode(ident, DhtNode(ident.node_id, limiter=RateLimiter(1e9, 1e9),
                                      rng=random.Random(self.rng.random()),
                                      subnet_limit=self.subnet_limit,
                                      rtt=RttTracker(max_s=self.timeout_s)),
                       Contact(ident.node_id, (addr,)))
        self.nodes.append(node)
        self.by_id[ident.node_id] = node
        return node

    def join(self, node: SimNode, via: SimNode, refreshes: int = 3) -> None:
        """Kademlia join: know one node, look yourself up, then a few far ids."""
        self.learned(node, via.contact, NOW)
        self.find_node(node, node.dht.table.own)
        for _ in range(refreshes):
            self.find_node(node, node.dht.table.own ^ (1 << (255 - self.rng.randrange(12))
                                                       | self.rng.getrandbits(243)))

    def build_sampled(self) -> None:
        """The sampled bootstrap: create all nodes, then fill each bucket of each node with
        up to k nodes drawn at random from the ids that bucket covers (what a long-running
        network's tables converge to), instead of n one-by-one joins. Subnet limits apply."""
        for _ in range(self.n):
            self._new_node()
        order = sorted(self.nodes, key=lambda n: n.contact.id)
        ids = [n.contact.id for n in order]
        nets = [subnets(n.contact) for n in order]
        for pos, node in enumerate(order):
            x, table = ids[pos], node.dht.table
            lowest = min(((x ^ ids[q]).bit_length() - 1 for q in (pos - 1, pos + 1)
                          if 0 <= q < len(ids)), default=256)
            for i in range(ID_BITS - 1, lowest - 1, -1):
                base = ((x >> i) ^ 1) << i
                lo = bisect.bisect_left(ids, base)
                hi = bisect.bisect_left(ids, base + (1 << i), lo)
                if hi == lo:
                    continue
                pick = range(lo, hi) if hi - lo <= table.k else \
                    self.rng.sample(range(lo, hi), min(hi - lo, 3 * table.k))
                table.fill([order[j].contact for j in pick], [nets[j] for j in pick], NOW)

    def build(self, sampled: bool = False) -> None:
        if sampled:
            self.build_sampled()
            return
        self._new_node()
        for _ in range(self.n - 1):
            node = self._new_node()
            via = self.rng.choice(self.nodes[:-1])
            while not via.alive:
                via = self.rng.choice(self.nodes[:-1])
            self.join(node, via)

    def publish(self, count: int, chosen: list[SimNode] | None = None) -> list[str]:
        """``count`` random live honest nodes (or ``chosen``) publish their node record
        under their node key."""
        live = [n for n in self.nodes if n.alive and not n.liar and not n.sybil]
        if chosen is None:
            chosen = self.rng.sample(live, min(count, len(live)))
        for node in chosen:
            body = records.build(node_id=node.ident.node_id, addresses=list(node.contact.addresses),
                                 capabilities=CAPS, seq=1, now=NOW - 60, lifetime_s=86400)
            env = envelope.sign(records.TYPE, body, [node.ident])
            node.dht.own_record = env
            self.published[node.ident.node_id] = env
            self.legit_ids.add(envelope.parse(env).id)
            self.put(node, node_key(node.ident.node_id), env)
        for n in self.nodes:
            for key in n.dht.store.keys():
                self.first_holders.setdefault(key, []).append(n.ident.node_id)
        return [n.ident.node_id for n in chosen]

    def churn(self, fraction: float) -> None:
        """Kill ``fraction`` of the nodes silently and join as many fresh ones."""
        live = [n for n in self.nodes if n.alive]
        dead = self.rng.sample(live, int(len(live) * fraction))
        for n in dead:
            n.alive = False
        for _ in range(len(dead)):
            via = self.rng.choice([n for n in self.nodes[:200] if n.alive] or live)
            while not via.alive:
                via = self.rng.choice(self.nodes)
            self.join(self._new_node(), via, refreshes=1)

    def make_liars(self, fraction: float) -> None:
        live = [n for n in self.nodes if n.alive and not n.sybil]
        for n in self.rng.sample(live, int(len(live) * fraction)):
            n.liar = True

    def clear_liars(self) -> None:
        for n in self.nodes:
            n.liar = False

    # -- the wire ------------------------------------------------------------------

    def _answer(self, src: SimNode, dst: Contact, msg: dict[str, Any], now: float
                ) -> dict[str, Any] | None:
        self.messages += 1
        node = self.by_id.get(dst.node_id)
        if node is None or not node.alive or self.rng.random() < self.loss:
            return None
        if node.liar:
            return self._lie(node, msg)
        if node.sybil and self.attack is not None:
            return self.attack.answer(node, msg)
        reply = node.dht.handle(src.ident.node_id, msg, now, observed=src.contact.addresses[0])
        if reply.candidate is not None:  # dial back: is it really there?
            peer = self.by_id.get(reply.candidate.node_id)
            if peer is not None and peer.alive:
                self.learned(node, reply.candidate, now)
        return reply.message

    def learned(self, node: SimNode, contact: Contact, now: float) -> None:
        """``node`` heard from ``contact``: into its table; replicate records it should have."""
        stale, pushes = node.dht.learned(contact, now)
        if stale is not None:  # the ping a real node sends its bucket's oldest contact
            peer = self.by_id.get(stale.node_id)
            if peer is None or not peer.alive:
                node.dht.table.failed(stale.node_id)
        if not self.replicate:
            return
        dst = self.by_id.get(contact.node_id)
        for key, env in pushes:
            self.maintenance += 1
            if dst is not None and dst.alive and not dst.liar and not dst.sybil:
                dst.dht.handle(node.ident.node_id, dht_node.put(key, env), now)

    def _fake_contacts(self, target: int) -> list[dict[str, Any]]:
        out = []
        for _ in range(K):
            fake = target ^ self.rng.getrandbits(200)  # very close to the target, nobody there
            out.append({"node_id": f"{fake:064x}", "addresses": ["192.0.2.1:4433"]})
        return out

    def _lie(self, liar: SimNode, msg: dict[str, Any]) -> dict[str, Any]:
        if msg["type"] == "dht_find_node":
            return {"type": "dht_nodes", "nodes": self._fake_contacts(int(msg["target"], 16))}
        if msg["type"] == "dht_get":
            key = msg["key"]
            return {"type": "dht_value", "key": key, "records": self._forgeries(liar, key),
                    "nodes": self._fake_contacts(key_id(key))}
        return {"type": "dht_error", "error": "no", "message": "no"}

    def _forgeries(self, liar: SimNode, key: str) -> list[Any]:
        victim_id = key.rsplit("/", 1)[-1]
        good = self.published.get(victim_id)
        out: list[Any] = [{"garbage": True}, "not even an object"]
        # a record for the victim, with other addresses, signed by the liar
        body = records.build(node_id=victim_id if len(victim_id) == 64 else liar.ident.node_id,
                             addresses=["203.0.113.66:4433"], capabilities=CAPS, seq=99,
                             now=NOW - 60, lifetime_s=86400)
        out.append(envelope.sign(records.TYPE, body, [liar.ident]))
        if good is not None:
            tampered = {**good, "body": {**good["body"], "addresses": ["203.0.113.66:4433"],
                                         "seq": 100}}
            out.append(tampered)  # the victim's signature over a different body
            resigned = dict(good)
            resigned["signatures"] = [{"key": good["body"]["node_id"],
                                       "sig": liar.ident.sign(b"x").hex()}]
            out.append(resigned)
        # the liar's own, valid record filed under someone else's key
        own = records.build(node_id=liar.ident.node_id, addresses=["203.0.113.66:4433"],
                            capabilities=CAPS, seq=1, now=NOW - 60, lifetime_s=86400)
        out.append(envelope.sign(records.TYPE, own, [liar.ident]))
        return out

    # -- lookups -------------------------------------------------------------------

    def _run(self, src: SimNode, target: int, make_msg: Any, expect: str,
             collector: Collector | None = None, want: str | None = None
             ) -> tuple[Lookup, float]:
        lk = Lookup(target, src.dht.table.closest(target), own_id=src.ident.node_id,
                    paths=self.paths, subnet_limit=self.subnet_limit)
        now = float(NOW)
        rtt = src.dht.rtt
        queue: list[tuple[float, int, Contact, dict[str, Any] | None, float]] = []
        seq = 0
        while not lk.done:
            for c in lk.next_queries():
                ans = self._answer(src, c, make_msg(), now)
                wait = rtt.timeout(c.node_id) if self.adaptive else self.timeout_s
                delay = self.rng.uniform(*self.latency_s) if ans is not None else wait
                if delay > wait:  # answered too late: counts as a timeout
                    ans, delay = None, wait
                seq += 1
                heapq.heappush(queue, (now + delay, seq, c, ans, delay))
            if not queue:
                break
            now, _, c, ans, delay = heapq.heappop(queue)
            if ans is None:
                lk.on_failure(c.node_id)
                src.dht.table.failed(c.node_id)
                continue
            try:
                a = parse_answer(ans, expect)
            except Exception:
                lk.on_failure(c.node_id)
                src.dht.table.failed(c.node_id)
                continue
            if a.type == "dht_error":
                lk.on_failure(c.node_id)
                continue
            rtt.observe(c.node_id, delay)
            lk.on_response(c.node_id, a.nodes)
            self.learned(src, c, now)
            if collector is not None:
                collector.add(a.records, NOW, holder=c.node_id)
                if collector.forged:
                    lk.on_bad(c.node_id)
                if want is not None and self.quorum and collector.agreeing(want) >= self.quorum:
                    lk.finish()
        for bad in lk.suspects:
            src.dht.table.penalize(bad)
        src.dht.table.touch(target, now)
        return lk, now

    def find_node(self, src: SimNode, target: int) -> Lookup:
        lk, _ = self._run(src, target,
                          lambda: dht_node.find_node(target, src.contact.addresses), "dht_nodes")
        return lk

    def put(self, src: SimNode, key: str, env: dict[str, Any]) -> int:
        lk = self.find_node(src, key_id(key))
        stored = 0
        for c in lk.closest(K):
            ans = self._answer(src, c, dht_node.put(key, env, src.contact.addresses), NOW)
            if ans is not None and ans.get("type") == "dht_stored":
                stored += 1
        return stored

    def get(self, src: SimNode, key: str, want: str) -> LookupResult:
        col = Collector(key)
        before = self.messages
        lk, t = self._run(src, key_id(key), lambda: dht_node.get(key), "dht_value", col, want)
        reported = list(col.best.values())
        # forged: reported, yet not signed by the node it describes. (A liar signing its
        # own record, even a misleading one, is not a forgery: it is its own word.)
        forged = sum(1 for v in reported if v.id not in self.legit_ids
                     and not self.by_id[v.body["node_id"]].liar
                     if v.body["node_id"] in self.by_id) + sum(
            1 for v in reported if v.body["node_id"] not in self.by_id)
        ok = any(v.body["node_id"] == want and v.id in self.legit_ids for v in reported)
        return LookupResult(ok, lk.hops, self.messages - before, t - NOW, forged,
                            sum(col.rejected.values()))

    def clone(self) -> Sim:
        """A deep copy (identities are shared: they are immutable and not copyable)."""
        memo: dict[int, Any] = {id(n.ident): n.ident for n in self.nodes}
        return copy.deepcopy(self, memo)

    def random_live(self, honest: bool = True) -> SimNode:
        while True:
            n = self.rng.choice(self.nodes)
            if n.alive and not (honest and (n.liar or n.sybil)):
                return n


def built(n: int, *, seed: int = 1, publishers: int = 1000, sampled: bool = False,
          **opts: Any) -> tuple[Sim, list[str]]:
    """A network of ``n`` nodes (joined one by one, or ``sampled``), with ``publishers``
    node records stored. ``opts`` are ``Sim`` fields (paths, subnet_limit, ...)."""
    sim = Sim(n, seed=seed, **opts)
    sim.build(sampled)
    return sim, sim.publish(publishers)


def scenario(base: tuple[Sim, list[str]], *, churn: float = 0.0, liars: float = 0.0,
             lookups: int = 500, seed: int = 2, clone: bool = True,
             kill_holders: bool = False) -> dict[str, Any]:
    """Lookups of published records on a copy of ``base`` (or on ``base`` itself: liars are
    undone afterwards, churn is not) after churn and/or liars. ``kill_holders``: after
    the churn, 20 records are chosen and every node that held one of them when it was
    published dies too; the lookups are for those records (of owners still alive)."""
    sim, ids = (base[0].clone() if clone else base[0]), base[1]
    sim.rng = random.Random(seed)
    if churn:
        sim.churn(churn)
    wanted = ids
    if kill_holders:  # 20 records lose every node that held them at publish time
        alive = [i for i in ids if sim.by_id[i].alive]
        wanted = sim.rng.sample(alive, min(20, len(alive)))
        for i in wanted:
            for nid in sim.first_holders.get(node_key(i), []):
                sim.by_id[nid].alive = False
    if liars:
        sim.make_liars(liars)
    sim.messages = 0
    results = []
    honest = [i for i in wanted if not sim.by_id[i].liar and sim.by_id[i].alive]
    for _ in range(lookups):
        want = sim.rng.choice(honest)
        results.append(sim.get(sim.random_live(), node_key(want), want))
    if liars and not clone:
        sim.clear_liars()
    return summary(sim, results, churn=churn, liars=liars)


def summary(sim: Sim, results: list[LookupResult], **labels: Any) -> dict[str, Any]:
    hops = sorted(r.hops for r in results if r.ok)
    times = sorted(r.time_s for r in results)
    n = sum(1 for x in sim.nodes if x.alive)
    return {
        "nodes": n, "log2_n": round(math.log2(n), 2), **labels, "lookups": len(results),
        "success": sum(r.ok for r in results) / len(results),
        "hops_median": statistics.median(hops) if hops else None,
        "hops_p90": hops[int(0.9 * (len(hops) - 1))] if hops else None,
        "messages_mean": round(statistics.fmean(r.messages for r in results), 1),
        "time_median_s": round(statistics.median(times), 3),
        "time_p90_s": round(times[int(0.9 * (len(times) - 1))], 3),
        "forged_rejected": sum(r.forged_seen for r in results),
        "forged_accepted": sum(r.forged_accepted for r in results),
        "table_mean": round(statistics.fmean(len(x.dht.table) for x in sim.nodes if x.alive), 1),
    }
