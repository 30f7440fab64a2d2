"""Fuzz: canonical JSON, envelopes, signed documents, node records, times."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from phase_core import canonical, documents, envelope, records
from phase_core.timefmt import parse_time
from phase_core.trust import Keyring
from tests.fuzz.strategies import JSON_OBJECTS, JSON_VALUES, VECTORS, clean, mutated, vector

KEYRING = Keyring.load(VECTORS / "keyring.toml")
NOW = parse_time("2030-01-01T00:00:00Z")
POLICY = documents.Policy(keyring=KEYRING, now=NOW)
VALID = ["valid/job_manifest.json", "valid/receipt.json", "valid/node_record.json",
         "valid/boot_manifest.json"]


@given(st.binary(max_size=300))
def test_canonical_parse_bytes(data):
    clean(canonical.parse, data)


@given(st.text(max_size=200))
def test_canonical_parse_text(text):
    clean(canonical.parse, text)


@given(JSON_VALUES)
def test_canonical_round_trip(value):
    out = clean(canonical.canonical, value)
    if isinstance(out, bytes):
        assert canonical.parse(out) == value


@given(st.sampled_from(VALID).flatmap(lambda n: st.tuples(
    st.just(n), st.binary(max_size=8), st.integers(0, 4000))))
def test_document_bytes_spliced(arg):
    """Bytes of a valid document with a few random bytes spliced in: parse, then verify."""
    name, junk, at = arg
    raw = json.dumps(vector(name)).encode()
    at %= len(raw)
    data = raw[:at] + junk + raw[at + len(junk):]
    obj = clean(canonical.parse, data)
    if not isinstance(obj, Exception):
        clean(documents.verify, obj, POLICY)


@given(JSON_OBJECTS)
def test_envelope_parse_any_object(obj):
    clean(envelope.parse, obj)
    clean(documents.verify, obj, POLICY)


@pytest.mark.parametrize("name", VALID)
@given(data=st.data())
def test_verify_mutated_documents(name, data):
    doc = data.draw(mutated(vector(name)))
    clean(documents.verify, doc, POLICY)


@given(st.data())
def test_node_record_body(data):
    body = data.draw(mutated(vector("valid/node_record.json")["body"]))
    clean(records.BODY, body, "node_record")


@given(st.one_of(st.text(max_size=70), st.from_regex(
    r"\[?[0-9a-fA-F:.]{0,20}\]?:[0-9]{0,6}", fullmatch=True)))
def test_node_record_address(text):
    clean(records.address, text, "addresses[0]")


@given(st.one_of(st.text(max_size=30), st.from_regex(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z", fullmatch=True)))
def test_time(text):
    clean(parse_time, text)
