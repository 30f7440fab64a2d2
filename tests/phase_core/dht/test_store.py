"""Record verification, the bounded store, request handling and caps, NAT observation."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from phase_core import boot, envelope, records
from phase_core.errors import PhaseError, ProtocolViolation
from phase_core.identity import Identity
from phase_core.protocol import dht_node
from phase_core.protocol.dht import Contact, K, key_id, node_key
from phase_core.protocol.dht_node import AddressObserver, DhtNode, RateLimiter, parse_answer
from phase_core.protocol.dht_store import Collector, Republisher, Store, record_keys, verify_value

NOW = 1_900_000_000
CAPS = {"arch": "x86_64", "cpu_cores": 2, "memory_bytes": 1 << 30,
        "runtimes": [{"name": "wasmtime", "version": "50.0.1"}], "features": []}


def ident(n: int) -> Identity:
    return Identity(bytes([n]) * 32)


def node_rec(who: Identity, seq: int = 1, life: int = 3600, **caps: Any) -> dict[str, Any]:
    body = records.build(node_id=who.node_id, addresses=["10.0.0.1:4433"],
                         capabilities={**CAPS, **caps}, seq=seq, now=NOW - 10, lifetime_s=life)
    return envelope.sign(records.TYPE, body, [who])


def boot_rec(signer: Identity, version: int = 1) -> dict[str, Any]:
    art = {"id": "sha256:" + "ab" * 32, "size": 10}
    body = boot.build(channel="stable", arch="x86_64", version=version, now=NOW - 10,
                      lifetime_s=3600, kernel=art, initramfs=art, cmdline="", mirrors=[])
    return envelope.sign(boot.TYPE, body, [signer])


def test_a_node_record_is_filed_only_under_the_keys_it_implies() -> None:
    a = ident(1)
    env = node_rec(a, boot=[{"channel": "stable", "arch": "x86_64"}])
    keys = record_keys(env["body"], records.TYPE)
    assert keys == [node_key(a.node_id), "phase/cap/any", "phase/cap/arch/x86_64",
                    "phase/cap/runtime/wasmtime", "phase/boot/stable/x86_64"]
    for k in keys:
        assert verify_value(env, k, NOW).body["node_id"] == a.node_id
    for wrong in (node_key(ident(2).node_id), "phase/cap/arch/aarch64",
                  "phase/cap/runtime/wasmer", "phase/boot/beta/x86_64"):
        with pytest.raises(PhaseError) as e:
            verify_value(env, wrong, NOW)
        assert e.value.slug == "wrong_key"


@pytest.mark.parametrize("forge,slug", [
    ("tamper", "bad_signature"), ("other_signer", "untrusted_signer"), ("expired", "expired"),
    ("future", "not_yet_valid"), ("huge", "too_large"), ("garbage", "malformed"),
    ("receipt_type", "wrong_type"),
])
def test_forged_records_are_refused(forge: str, slug: str) -> None:
    a, b = ident(1), ident(2)
    env = node_rec(a)
    if forge == "tamper":
        env["body"]["addresses"] = ["203.0.113.1:4433"]
    elif forge == "other_signer":  # b signs a record naming a
        env = envelope.sign(records.TYPE, env["body"], [b])
    elif forge == "expired":
        env = node_rec(a, life=5)
    elif forge == "future":
        body = records.build(node_id=a.node_id, addresses=[], capabilities=CAPS, seq=1,
                             now=NOW + 3600)
        env = envelope.sign(records.TYPE, body, [a])
    elif forge == "huge":
        env = node_rec(a, padding="x" * 9000)
    elif forge == "garbage":
        env = {"v": 1, "type": "node_record", "body": "nope", "signatures": []}
    elif forge == "receipt_type":
        env = dict(env, type="receipt")
    with pytest.raises(PhaseError) as e:
        verify_value(env, node_key(a.node_id), NOW)
    assert e.value.slug == slug


def test_boot_manifests_are_checked_and_keyed_by_channel_and_arch() -> None:
    s = ident(9)
    env = boot_rec(s)
    v = verify_value(env, "phase/boot/stable/x86_64", NOW)
    assert v.slot == s.node_id and v.order == 1
    with pytest.raises(PhaseError):
        verify_value(env, "phase/boot/beta/x86_64", NOW)
    bad = copy.deepcopy(env)
    bad["body"]["cmdline"] = "init=/bin/sh"
    with pytest.raises(PhaseError) as e:
        verify_value(bad, "phase/boot/stable/x86_64", NOW)
    assert e.value.slug == "bad_signature"


def test_store_newer_seq_replaces_older_and_expiry_drops() -> None:
    a = ident(1)
    st = Store()
    key = node_key(a.node_id)
    assert st.put(verify_value(node_rec(a, seq=1), key, NOW), NOW) == "stored"
    assert st.put(verify_value(node_rec(a, seq=1), key, NOW), NOW) == "unchanged"
    assert st.put(verify_value(node_rec(a, seq=5), key, NOW), NOW) == "replaced"
    with pytest.raises(PhaseError) as e:
        st.put(verify_value(node_rec(a, seq=3), key, NOW), NOW)
    assert e.value.slug == "stale"
    assert [v.order for v in st.get(key, NOW)] == [5]
    assert st.get(key, NOW + 4000) == [] and st.count == 0 and st.bytes == 0


def test_store_caps_per_key_and_total() -> None:
    st = Store(max_per_key=3, max_records=5)
    vals = [verify_value(node_rec(ident(i)), "phase/cap/any", NOW) for i in range(1, 5)]
    for v in vals[:3]:
        st.put(v, NOW)
    with pytest.raises(PhaseError) as e:
        st.put(vals[3], NOW)
    assert e.value.slug == "full"
    for i in range(1, 3):
        st.put(verify_value(node_rec(ident(i)), node_key(ident(i).node_id), NOW), NOW)
    assert st.count == 5
    with pytest.raises(PhaseError):
        st.put(verify_value(node_rec(ident(4)), node_key(ident(4).node_id), NOW), NOW)


def test_collector_reports_each_record_once_and_counts_forgeries() -> None:
    a = ident(1)
    good, newer = node_rec(a, seq=1), node_rec(a, seq=2)
    forged = copy.deepcopy(newer)
    forged["body"]["seq"] = 99
    col = Collector(node_key(a.node_id))
    assert [v.order for v in col.add([good, good, forged, "junk"], NOW)] == [1]
    assert [v.order for v in col.add([newer, good], NOW)] == [2]
    assert col.rejected == {"bad_signature": 1, "malformed": 1}


def _node(n: int, **kw: Any) -> DhtNode:
    return DhtNode(ident(n).node_id, **kw)


def test_handle_put_get_paging_and_not_close() -> None:
    holder = _node(50)
    key = "phase/cap/any"
    for i in range(1, 21):
        r = holder.handle(ident(i).node_id, dht_node.put(key, node_rec(ident(i))), NOW)
        assert r.message["type"] == "dht_stored", r.message
    got = parse_answer(holder.handle(ident(1).node_id, dht_node.get(key), NOW).message,
                       "dht_value")
    assert len(got.records) == 16 and got.more
    last = max(envelope.parse(r).id for r in got.records)
    rest = parse_answer(holder.handle(ident(1).node_id, dht_node.get(key, after=last), NOW)
                        .message, "dht_value")
    assert len(rest.records) == 4 and not rest.more
    # a node that knows k nodes closer to the key refuses to store it
    far = _node(51)
    target = key_id(key)
    for i in range(K):
        far.table.seen(Contact(f"{target ^ (i + 1):064x}", ("10.0.0.9:1",)), NOW)
    r = far.handle(ident(1).node_id, dht_node.put(key, node_rec(ident(1))), NOW)
    assert r.message["error"] == "not_close"


def test_handle_refuses_bad_requests_and_rate_limits() -> None:
    n = _node(60, limiter=RateLimiter(rate=1.0, burst=3.0))
    peer = ident(1).node_id
    assert n.handle(peer, {"type": "dht_nope"}, NOW).message["error"] == "bad_request"
    assert n.handle(peer, "junk", NOW).message["error"] == "bad_request"
    r = n.handle(peer, {"type": "dht_find_node", "target": "x"}, NOW)
    assert r.message["error"] == "malformed"
    r = n.handle(peer, {"type": "dht_ping", "addresses": ["1.2.3.4:5"] * 9}, NOW + 10)
    assert r.message["error"] == "malformed"  # no unbounded list from a peer
    for _ in range(3):
        assert n.handle(peer, dht_node.ping(), NOW + 20).message["type"] == "dht_pong"
    assert n.handle(peer, dht_node.ping(), NOW + 20).message["error"] == "rate_limited"
    assert n.handle(ident(2).node_id, dht_node.ping(), NOW + 20).message["type"] == "dht_pong"
    assert n.handle(peer, dht_node.ping(), NOW + 22).message["type"] == "dht_pong"


def test_requester_addresses_become_a_candidate_and_observed_is_reported() -> None:
    n = _node(61)
    n.own_record = node_rec(ident(61))
    r = n.handle(ident(1).node_id, dht_node.ping(["10.0.0.7:4433"], want_self=True), NOW,
                 observed="198.51.100.7:50000")
    # dialled back where the request came from, on the port it claims (never 10.0.0.7)
    assert r.candidate == Contact(ident(1).node_id, ("198.51.100.7:4433",))
    assert ident(1).node_id not in n.table  # not before the dial-back succeeds
    ans = parse_answer(r.message, "dht_pong")
    assert ans.observed == "198.51.100.7:50000" and ans.self_record == n.own_record


def test_answers_over_the_caps_are_protocol_violations() -> None:
    many = [{"node_id": f"{i:064x}", "addresses": ["10.0.0.1:1"]} for i in range(K + 1)]
    with pytest.raises(ProtocolViolation):
        parse_answer({"type": "dht_nodes", "nodes": many}, "dht_nodes")
    with pytest.raises(ProtocolViolation):
        parse_answer({"type": "dht_value", "records": [{}] * 17}, "dht_value")
    with pytest.raises(ProtocolViolation):
        parse_answer({"type": "dht_pong"}, "dht_nodes")
    err = parse_answer({"type": "dht_error", "error": "full"}, "dht_stored")
    assert err.error == "full"


def test_address_observer_needs_agreeing_observers() -> None:
    obs = AddressObserver(local_hosts=["192.168.1.5"], min_observers=3)
    assert obs.reachability(0) == "unknown"
    for i in range(2):
        obs.observe(f"{i:064x}", "203.0.113.9:40000", 0)
    assert obs.public_host(0) is None  # two are not enough
    obs.observe(f"{2:064x}", "203.0.113.9:40001", 0)
    assert obs.public_host(0) == "203.0.113.9"
    assert obs.reachability(0) == "private"  # behind a NAT: not one of our addresses
    assert obs.observed_addresses(4433, 0) == ["203.0.113.9:4433"]
    for i in range(3):
        obs.observe(f"{i + 10:064x}", "198.51.100.1:1", 0)  # a competing claim: no 2/3 majority
    assert obs.public_host(0) is None
    assert obs.public_host(10_000) is None  # and votes expire
    pub = AddressObserver(local_hosts=["93.184.216.34"])  # a global address (TEST-NETs are not)
    for i in range(3):
        pub.observe(f"{i:064x}", "93.184.216.34:5", 0)
    assert pub.reachability(0) == "public"


def test_republisher_timing() -> None:
    r = Republisher(interval=100)
    r.set("me", {"x": 1}, ["phase/cap/any"], now=0)
    assert len(r.due(0)) == 1 and r.due(50) == [] and len(r.due(100)) == 1
