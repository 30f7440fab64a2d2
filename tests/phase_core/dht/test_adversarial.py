"""Lookups and tables under attack, in memory: disjoint paths, distrust of referrers and
holders that lie, down-ranking, bucket diversity, replication, adaptive timeouts."""

from __future__ import annotations

import random

from phase_core import envelope, records
from phase_core.identity import Identity
from phase_core.protocol.dht import (
    MAX_STRIKES,
    SUBNET_LIMIT,
    Contact,
    K,
    RoutingTable,
    key_id,
    node_key,
)
from phase_core.protocol.dht_lookup import DROPPED, FAILED, OK, Lookup
from phase_core.protocol.dht_node import DhtNode
from phase_core.protocol.dht_rtt import RttTracker
from phase_core.protocol.dht_store import Collector

NOW = 1_900_000_000
CAPS = {"arch": "x86_64", "cpu_cores": 2, "memory_bytes": 1 << 30,
        "runtimes": [{"name": "wasmtime", "version": "50.0.1"}], "features": []}


def cid(i: int) -> str:
    return f"{i:064x}"


def pub(i: int) -> Contact:
    """A contact with a public address in a /24 of its own (for most i)."""
    return Contact(cid(i), (f"{11 + i % 80}.{(i >> 8) & 255}.{(i >> 16) & 255}.7:4433",))


def drive(lk: Lookup, answer: object) -> list[str]:
    """Run ``lk`` to the end; ``answer(contact)`` gives a list of contacts or None (timeout).
    Returns the node ids asked, in order."""
    asked: list[str] = []
    while not lk.done:
        batch = lk.next_queries()
        if not batch:
            break
        for c in batch:
            asked.append(c.node_id)
            got = answer(c)  # type: ignore[operator]
            if got is None:
                lk.on_failure(c.node_id)
            else:
                lk.on_response(c.node_id, got)
    return asked


# -- disjoint paths ----------------------------------------------------------------

def _eclipse_world(seed: int) -> tuple[list[int], list[int], int]:
    rng = random.Random(seed)
    target = rng.getrandbits(256)
    honest = [rng.getrandbits(256) for _ in range(300)]
    sybils = [target ^ rng.getrandbits(180) for _ in range(3 * K)]  # nearer than anyone
    return honest, sybils, target


def _run_eclipse(paths: int, seed: int) -> tuple[Lookup, list[int], list[str]]:
    honest, sybils, target = _eclipse_world(seed)
    sybil_set = set(sybils)

    def answer(c: Contact) -> list[Contact]:
        if c.id in sybil_set:  # a sybil names only sybils, nearest to the target first
            return sorted((pub(s) for s in sybils), key=lambda x: x.id ^ target)[:K]
        return sorted((pub(h) for h in honest if h != c.id), key=lambda x: x.id ^ target)[:K]

    # our table: the nearest sybil first, then honest nodes far from the target
    far = sorted(honest, key=lambda h: h ^ target)[-6:]
    seeds = [pub(sybils[0])] + [pub(h) for h in far]
    lk = Lookup(target, seeds, paths=paths)
    asked = drive(lk, answer)
    truth = sorted(honest, key=lambda h: h ^ target)[:5]
    return lk, truth, asked


def test_a_path_captured_by_sybils_does_not_capture_the_other_path() -> None:
    for seed in range(5):
        lk, truth, asked = _run_eclipse(2, seed)
        assert all(lk.state_of(cid(h)) == OK for h in truth)  # the honest path got there
        assert len(asked) == len(set(asked))  # every node asked once, by one path
        assert {lk.path_of(cid(h)) for h in truth} == {1}  # the path without the sybil
    lk, truth, _ = _run_eclipse(1, 0)  # one path: the sybils fill its k closest, it ends
    assert not any(lk.state_of(cid(h)) == OK for h in truth)


def test_paths_split_the_seeds_and_each_runs_to_its_own_k_closest() -> None:
    rng = random.Random(2)
    ids = [rng.getrandbits(256) for _ in range(200)]
    target = rng.getrandbits(256)
    lk = Lookup(target, [pub(i) for i in ids[:8]], paths=2)
    drive(lk, lambda c: sorted((pub(i) for i in ids if i != c.id),
                               key=lambda x: x.id ^ target)[:K])
    assert {lk.path_of(cid(i)) for i in ids[:8]} == {0, 1}
    assert lk.path_done(0) and lk.path_done(1)
    assert [c.id for c in lk.closest()] == sorted(ids, key=lambda i: i ^ target)[:K]


# -- distrust: referrers of phantoms, holders of forgeries --------------------------

def test_a_referrer_whose_contacts_all_fail_is_distrusted_and_its_rest_dropped() -> None:
    rng = random.Random(4)
    target = rng.getrandbits(256)
    honest = [rng.getrandbits(256) for _ in range(100)]
    liar = rng.getrandbits(256)
    phantoms = [target ^ rng.getrandbits(150) for _ in range(K)]

    def answer(c: Contact) -> list[Contact] | None:
        if c.id == liar:
            return [pub(p) for p in phantoms]
        if c.id in phantoms:
            return None  # nobody there
        return sorted((pub(h) for h in honest if h != c.id), key=lambda x: x.id ^ target)[:K]

    lk = Lookup(target, [pub(liar)] + [pub(h) for h in honest[:5]], paths=1)
    asked = drive(lk, answer)
    phantom_asks = sum(1 for a in asked if int(a, 16) in phantoms)
    assert phantom_asks <= 3  # not k timeouts: 2 strikes (and what was already in flight)
    assert cid(liar) in lk.suspects and lk.dropped >= K - 3
    assert cid(liar) not in {c.node_id for c in lk.closest()}
    assert [c.id for c in lk.closest(5)] == sorted(honest, key=lambda h: h ^ target)[:5]


def test_a_phantom_also_named_by_an_honest_peer_is_still_asked() -> None:
    lk = Lookup(1000, [pub(1 << 200), pub(1 << 201)], paths=1)
    a, b = lk.next_queries()[:2]
    lk.on_response(a.node_id, [pub(5), pub(6), pub(7)])
    lk.on_failure(b.node_id)
    lk.on_bad(a.node_id)  # a served a forgery: what only it named is dropped
    assert lk.state_of(cid(5)) == DROPPED
    lk2 = Lookup(1000, [pub(1 << 200), pub(1 << 201)], paths=1)
    a, b = lk2.next_queries()[:2]
    lk2.on_response(a.node_id, [pub(5), pub(6)])
    lk2.on_response(b.node_id, [pub(5)])
    lk2.on_bad(a.node_id)
    assert lk2.state_of(cid(5)) != DROPPED and lk2.state_of(cid(6)) == DROPPED


def test_a_holder_serving_a_forgery_is_flagged_by_the_collector() -> None:
    who = Identity(bytes([3]) * 32)
    body = records.build(node_id=who.node_id, addresses=["11.0.0.1:4433"], capabilities=CAPS,
                         seq=1, now=NOW - 10, lifetime_s=3600)
    good = envelope.sign(records.TYPE, body, [who])
    forged = {**good, "body": {**good["body"], "seq": 2}}
    col = Collector(node_key(who.node_id))
    col.add([good], NOW, holder=cid(1))
    assert col.forged == 0 and col.agreeing(who.node_id) == 1
    col.add([forged, good], NOW, holder=cid(2))
    assert col.forged == 1 and col.agreeing(who.node_id) == 2


# -- down-ranking in the table -------------------------------------------------------

def test_a_penalized_contact_is_listed_last_evicted_first_and_dropped_at_max_strikes(
        ) -> None:
    t = RoutingTable(cid(0))
    top = 1 << 255
    for i in range(K):
        t.seen(pub(top | i), float(i))
    t.penalize(cid(top | 0))
    assert [c.node_id for c in t.closest(top)][-1] == cid(top | 0)  # nearest, yet last
    assert t.seen(pub(top | 999), 100.0) is None  # took the penalized one's place at once
    assert cid(top | 999) in t and cid(top | 0) not in t
    t.penalize(cid(top | 1))
    t.penalize(cid(top | 1))
    assert MAX_STRIKES == 2 and cid(top | 1) not in t
    t.seen(pub(top | 1), 200.0)  # answering again does not bring it back
    assert cid(top | 1) not in t


# -- bucket diversity ---------------------------------------------------------------

def test_a_bucket_takes_at_most_subnet_limit_contacts_per_24_and_per_64() -> None:
    t = RoutingTable(cid(0))
    top = 1 << 255
    for i in range(SUBNET_LIMIT + 3):
        t.seen(Contact(cid(top | i), (f"198.51.7.{i + 1}:4433",)), 0.0)
    assert len(t) == SUBNET_LIMIT and t.refused_subnet == 3
    t.seen(Contact(cid(top | 50), ("198.51.8.1:4433",)), 0.0)  # another /24: welcome
    t.seen(Contact(cid(1 << 200), ("198.51.7.99:4433",)), 0.0)  # another bucket: welcome
    assert len(t) == SUBNET_LIMIT + 2
    for i in range(5):
        t.seen(Contact(cid(top | (100 + i)), (f"[2a01:4f8:1:2::{i + 1}]:4433",)), 0.0)
    v6 = [c for c in t.contacts() if c.addresses[0].startswith("[")]
    assert len(v6) == SUBNET_LIMIT
    # a contact listing a crowded subnet among other addresses is refused too
    t.seen(Contact(cid(top | 200), ("203.0.114.1:1", "198.51.7.200:1")), 0.0)
    assert cid(top | 200) not in t


def test_private_addresses_are_exempt_unless_asked() -> None:
    lan = RoutingTable(cid(0))
    strict = RoutingTable(cid(0), limit_private=True)
    for i in range(10):
        c = Contact(cid((1 << 255) | i), (f"10.0.0.{i + 1}:4433",))
        lan.seen(c, 0.0)
        strict.seen(c, 0.0)
    assert len(lan) == 10 and len(strict) == SUBNET_LIMIT


# -- replication ---------------------------------------------------------------------

def _holder_with_record() -> tuple[DhtNode, str, dict[str, object], int]:
    who = Identity(bytes([9]) * 32)
    key = node_key(who.node_id)
    target = key_id(key)
    holder = DhtNode(f"{target ^ (1 << 100):064x}")  # very close to the key
    for i in range(K):  # far contacts only
        holder.table.seen(pub(target ^ (1 << 250) ^ (i << 8)), NOW)
    body = records.build(node_id=who.node_id, addresses=["11.0.0.1:4433"], capabilities=CAPS,
                         seq=1, now=NOW - 10, lifetime_s=3600)
    env = envelope.sign(records.TYPE, body, [who])
    r = holder.handle(cid(7), {"type": "dht_put", "key": key, "record": env}, NOW)
    assert r.message["type"] == "dht_stored"
    return holder, key, env, target


def test_a_holder_pushes_its_records_to_a_new_close_node_once() -> None:
    holder, key, env, target = _holder_with_record()
    near = pub(target ^ (1 << 90))
    _, pushes = holder.learned(near, NOW)
    assert pushes == [(key, env)]
    assert holder.learned(near, NOW + 1)[1] == []  # known already: nothing again
    far = pub(target ^ (1 << 254))
    assert holder.learned(far, NOW)[1] == []  # not among the k closest to the key


def test_a_holder_no_longer_among_the_k_closest_pushes_nothing() -> None:
    holder, _key, _, target = _holder_with_record()
    for i in range(K):  # k known nodes are closer to the key than the holder
        holder.table.seen(pub(target ^ (1 << 60) ^ (i << 10)), NOW)
    assert holder.learned(pub(target ^ (1 << 70)), NOW)[1] == []


# -- adaptive timeouts ---------------------------------------------------------------

def test_timeouts_follow_the_observed_rtt_per_contact() -> None:
    rtt = RttTracker(min_s=0.05, max_s=3.0)
    assert rtt.timeout(cid(1)) == 3.0  # nothing measured yet
    for _ in range(20):
        rtt.observe(cid(1), 0.02)
        rtt.observe(cid(2), 0.4)
    assert 0.05 <= rtt.timeout(cid(1)) < 0.1
    assert 0.4 < rtt.timeout(cid(2)) < 1.5
    assert rtt.timeout(cid(3)) < 3.0  # a stranger gets the node-wide estimate
    rtt.observe(cid(1), float("nan"))
    assert rtt.timeout(cid(1)) < 0.1


def test_failed_seeds_end_the_lookup_on_every_path() -> None:
    lk = Lookup(1, [pub(i) for i in range(6)], paths=2)
    drive(lk, lambda c: None)
    assert lk.done and lk.closest() == [] and lk.failures == 6
    assert all(lk.state_of(cid(i)) == FAILED for i in range(6))


def test_a_lookup_path_counts_at_most_subnet_limit_candidates_of_one_subnet() -> None:
    """Sybils from one /24, nearer the target than anyone, cannot fill a path's window:
    the lookup still reaches the honest nodes nearest the target."""
    rng = random.Random(8)
    target = rng.getrandbits(256)
    honest = [rng.getrandbits(256) for _ in range(200)]
    sybils = [Contact(cid(target ^ rng.getrandbits(150)), (f"45.77.1.{i + 1}:4433",))
              for i in range(3 * K)]
    sybil_ids = {c.node_id for c in sybils}

    def answer(c: Contact) -> list[Contact]:
        if c.node_id in sybil_ids:
            return sybils[:K]
        near = sorted((pub(h) for h in honest if h != c.id), key=lambda x: x.id ^ target)
        return (sybils[:K // 2] + near)[:K]  # honest nodes that know Sybils name them first

    seeds = [pub(h) for h in sorted(honest, key=lambda h: h ^ target)[-4:]]
    truth = sorted(honest, key=lambda h: h ^ target)[:5]
    lk = Lookup(target, seeds, paths=1)
    drive(lk, answer)
    assert all(lk.state_of(cid(h)) == OK for h in truth)
    asked = sum(1 for s in sybil_ids if lk.state_of(s) == OK)
    blind = Lookup(target, seeds, paths=1, subnet_limit=None)
    drive(blind, answer)
    assert not any(blind.state_of(cid(h)) == OK for h in truth)  # the Sybils filled it
    assert asked < K // 2 <= K <= sum(1 for s in sybil_ids if blind.state_of(s) == OK)


def test_a_newcomer_refused_by_the_subnet_limit_gets_no_records() -> None:
    holder, _key, _, target = _holder_with_record()
    pushed = 0
    for i in range(SUBNET_LIMIT + 2):  # near the key, all from one /24
        c = Contact(cid(target ^ (1 << 80) ^ i), (f"45.77.9.{i + 1}:4433",))
        pushed += len(holder.learned(c, NOW)[1])
    assert pushed == SUBNET_LIMIT
