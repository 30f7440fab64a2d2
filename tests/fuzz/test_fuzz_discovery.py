"""Fuzz: DHT requests and answers, DHT records, mDNS TXT properties."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from phase_core.identity import Identity
from phase_core.protocol import dht_node
from phase_core.protocol.dht import Contact, node_key
from phase_core.protocol.dht_node import DhtNode, Reply, parse_answer
from phase_core.protocol.dht_store import verify_value
from phase_core.timefmt import parse_time
from tests.fuzz.strategies import JSON_OBJECTS, JSON_VALUES, clean, mutated, vector

NOW = parse_time("2030-01-01T00:00:00Z")
ME = Identity(hashlib.sha256(b"fuzz-dht-node").digest()).node_id
PEER = Identity(hashlib.sha256(b"fuzz-dht-peer").digest()).node_id
RECORD = vector("valid/node_record.json")
RECORD_KEY = node_key(RECORD["body"]["node_id"])

REQUESTS = {
    "dht_ping": {"type": "dht_ping", "addresses": ["127.0.0.1:4433"], "want_self": True},
    "dht_find_node": {"type": "dht_find_node", "target": PEER},
    "dht_get": {"type": "dht_get", "key": RECORD_KEY, "after": None},
    "dht_put": {"type": "dht_put", "key": RECORD_KEY, "record": RECORD},
}
ANSWERS = {
    "dht_pong": {"type": "dht_pong", "observed": "10.0.0.1:4433", "self": RECORD},
    "dht_nodes": {"type": "dht_nodes",
                  "nodes": [{"node_id": PEER, "addresses": ["[::1]:4433"]}]},
    "dht_value": {"type": "dht_value", "key": RECORD_KEY, "records": [RECORD],
                  "more": False, "nodes": []},
    "dht_stored": {"type": "dht_stored", "key": RECORD_KEY, "result": "stored"},
}


def _handle(msg: object) -> Reply:
    reply = DhtNode(ME).handle(PEER, msg, float(NOW), observed="10.0.0.2:1")
    assert isinstance(reply, Reply) and isinstance(reply.message, dict)
    assert reply.message["type"] in dht_node.ANSWERS
    return reply


def test_the_examples_are_accepted():
    for t, msg in REQUESTS.items():
        assert _handle(msg).message["type"] != "dht_error", t
    for t, msg in ANSWERS.items():
        parse_answer(msg, t)


@given(st.one_of(JSON_VALUES, JSON_OBJECTS.map(lambda o: {**o, "type": "dht_get"})))
def test_dht_request_any_value(msg):
    clean(_handle, msg)


@given(st.sampled_from(sorted(REQUESTS)).flatmap(lambda t: mutated(REQUESTS[t])))
def test_dht_request_mutated(msg):
    clean(_handle, msg)


@given(JSON_VALUES, st.sampled_from(sorted(ANSWERS)))
def test_dht_answer_any_value(msg, expect):
    clean(parse_answer, msg, expect)


@given(st.sampled_from(sorted(ANSWERS)).flatmap(
    lambda t: st.tuples(st.just(t), mutated(ANSWERS[t]))))
def test_dht_answer_mutated(arg):
    expect, msg = arg
    clean(parse_answer, msg, expect)


@given(st.one_of(JSON_VALUES, mutated(RECORD), mutated(vector("valid/boot_manifest.json"))),
       st.sampled_from([RECORD_KEY, "phase/boot/stable/x86_64", "phase/arch/x86_64", "x"]))
def test_dht_record(obj, key):
    clean(verify_value, obj, key, NOW)


@given(JSON_VALUES)
def test_dht_contact(obj):
    clean(Contact.from_json, obj)


# -- mDNS TXT (decode_txt is a pure function of the TXT properties) -------------------
mdns = pytest.importorskip("phase_core.aio.mdns")
GOOD_TXT = mdns.encode_txt(RECORD, 4433)
TXT_KEYS = st.one_of(st.sampled_from(sorted(GOOD_TXT)), st.binary(max_size=4))


def test_the_good_txt_decodes():
    assert mdns.decode_txt(dict(GOOD_TXT), NOW).body == RECORD["body"]


@given(st.dictionaries(TXT_KEYS, st.one_of(st.none(), st.binary(max_size=64)), max_size=8))
def test_mdns_txt_any(props):
    clean(mdns.decode_txt, props, NOW)


@given(st.sampled_from(sorted(GOOD_TXT)), st.one_of(st.none(), st.binary(max_size=300)),
       st.booleans())
def test_mdns_txt_one_property_changed(key, value, drop):
    props: dict[bytes, bytes | None] = dict(GOOD_TXT)
    if drop:
        del props[key]
    else:
        props[key] = value
    clean(mdns.decode_txt, props, NOW)


@given(st.binary(max_size=2000))
def test_mdns_txt_any_compressed_body(raw):
    import zlib

    props: dict[bytes, bytes | None] = {k: v for k, v in GOOD_TXT.items()
                                        if not k.startswith(b"r")}
    packed = zlib.compress(raw)
    for i in range(0, min(len(packed), 240 * 10), 240):
        props[f"r{i // 240}".encode()] = packed[i:i + 240]
    clean(mdns.decode_txt, props, NOW)
