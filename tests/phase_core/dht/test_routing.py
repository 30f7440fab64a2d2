"""Routing table and lookup state machine, in memory."""

from __future__ import annotations

import random

import pytest

from phase_core.errors import Malformed
from phase_core.protocol.dht import (
    Contact,
    K,
    RoutingTable,
    check_address,
    check_key,
    dialable,
    key_id,
)
from phase_core.protocol.dht_lookup import Lookup


def cid(i: int) -> str:
    return f"{i:064x}"


def contact(i: int) -> Contact:
    return Contact(cid(i), (f"10.0.0.{i % 250 + 1}:4433",))


def test_bucket_keeps_k_and_offers_the_oldest_for_a_ping() -> None:
    t = RoutingTable(cid(0))
    top = 1 << 255
    for i in range(K):
        assert t.seen(contact(top | i), float(i)) is None
    stale = t.seen(contact(top | 999), 100.0)
    assert stale == contact(top)  # least recently seen; newcomer waits in the replacements
    assert cid(top | 999) not in t
    t.failed(cid(top))  # the ping failed: evicted, the replacement moves in
    assert cid(top) not in t and cid(top | 999) in t
    assert len(t) == K


def test_a_seen_contact_moves_to_the_tail_and_failures_are_counted() -> None:
    t = RoutingTable(cid(0))
    t.seen(contact(5), 1.0)
    t.seen(contact(6), 2.0)
    t.failed(cid(5))
    assert cid(5) in t  # one failure without replacement: kept
    t.failed(cid(5))
    assert cid(5) not in t  # two: dropped


def test_closest_is_exactly_sorted_by_xor_distance() -> None:
    rng = random.Random(3)
    t = RoutingTable(cid(rng.getrandbits(256)))
    ids = [rng.getrandbits(256) for _ in range(400)]
    for i in ids:
        t.seen(contact(i), 0.0)
    for _ in range(50):
        target = rng.getrandbits(256)
        want = sorted((c.id for c in t.contacts()), key=lambda x: x ^ target)[:K]
        assert [c.id for c in t.closest(target)] == want


def test_is_close_and_refresh_targets() -> None:
    rng = random.Random(4)
    t = RoutingTable(cid(1 << 200))
    assert t.is_close(12345)  # knows nobody: close to everything
    for i in range(1, K + 1):
        t.seen(contact(i), 0.0)  # 20 nodes right next to id 0
    assert not t.is_close(0)
    assert t.is_close(1 << 200)
    targets = t.refresh_targets(10_000.0, rng)
    assert targets and all(t.own ^ x for x in targets)
    assert t.refresh_targets(10_001.0, rng) == []  # refreshed just now


def test_persistence_round_trip_and_refusals() -> None:
    t = RoutingTable(cid(7))
    rng = random.Random(1)
    for _ in range(50):
        t.seen(contact(rng.getrandbits(256)), 0.0)
    n = len(t)
    saved = t.to_json()
    u = RoutingTable(cid(7))
    assert u.load_json(saved, 5.0) == n
    assert {c.node_id for c in u.contacts()} == {c.node_id for c in t.contacts()}
    with pytest.raises(Malformed):
        RoutingTable(cid(8)).load_json(saved, 0.0)  # another node's table
    saved["contacts"].append({"node_id": "zz", "addresses": []})
    assert RoutingTable(cid(7)).load_json(saved, 0.0) == n  # a bad entry is skipped


def test_keys_and_addresses() -> None:
    assert check_key("phase/cap/arch/x86_64")
    assert check_key("phase/boot/stable/aarch64")
    for bad in ("phase/cap/arch/X86", "other/key", "phase/boot/stable/pdp11", "a" * 200, 7):
        with pytest.raises(Malformed):
            check_key(bad)
    assert key_id("phase/cap/any") != key_id("phase/cap/any ")
    assert check_address("[::1]:4433") and check_address("node.example:1")
    for bad in ("1.2.3.4", "1.2.3.4:99999", "[zz]:1", "a b:1", "x" * 80 + ":1"):
        with pytest.raises(Malformed):
            check_address(bad)
    assert not dialable("0.0.0.0:4433") and not dialable("1.2.3.4:0")


class Net:
    """A small network whose k-buckets are full: every node offered every other one."""

    def __init__(self, n: int, seed: int) -> None:
        rng = random.Random(seed)
        self.ids = [rng.getrandbits(256) for _ in range(n)]
        self.tables = {}
        for i in self.ids:
            t = RoutingTable(cid(i))
            for j in rng.sample(self.ids, n):
                if j != i:
                    t.seen(contact(j), 0.0)
            self.tables[i] = t


def test_lookup_converges_on_the_true_closest_with_at_most_alpha_in_flight() -> None:
    net = Net(300, seed=5)
    rng = random.Random(9)
    for _ in range(20):
        src, target = rng.choice(net.ids), rng.getrandbits(256)
        lk = Lookup(target, net.tables[src].closest(target), own_id=cid(src))
        while not lk.done:
            batch = lk.next_queries()
            assert lk.inflight <= 3
            for c in batch:
                lk.on_response(c.node_id, net.tables[c.id].closest(target))
            if not batch:
                break
        truth = sorted((i for i in net.ids if i != src), key=lambda x: x ^ target)[:K]
        assert [c.id for c in lk.closest()] == truth
        assert 1 <= lk.hops <= 6


def test_lookup_survives_failures_and_liars() -> None:
    net = Net(300, seed=6)
    rng = random.Random(10)
    liars = set(rng.sample(net.ids, 30))
    target = rng.getrandbits(256)
    src = next(i for i in net.ids if i not in liars)
    lk = Lookup(target, net.tables[src].closest(target), own_id=cid(src))
    while not lk.done:
        batch = lk.next_queries()
        for c in batch:
            if c.id in liars:  # k fabricated contacts right next to the target
                lk.on_response(c.node_id, [contact(target ^ rng.getrandbits(100))
                                           for _ in range(K)])
            elif c.id not in net.tables:
                lk.on_failure(c.node_id)  # nobody there
            else:
                lk.on_response(c.node_id, net.tables[c.id].closest(target))
        if not batch:
            break
    found = {c.id for c in lk.closest()}
    assert found <= set(net.ids)  # only nodes that answered
    honest = sorted((i for i in net.ids if i != src), key=lambda x: x ^ target)[:5]
    assert set(honest) <= found
    assert lk.failures > 0 and lk.queries <= lk.max_queries


def test_lookup_ends_when_every_seed_fails() -> None:
    lk = Lookup(1, [contact(i) for i in range(5)])
    for c in lk.next_queries():
        lk.on_failure(c.node_id)
    while not lk.done:
        for c in lk.next_queries():
            lk.on_failure(c.node_id)
    assert lk.closest() == [] and lk.failures == 5
