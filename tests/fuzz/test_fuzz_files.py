"""Fuzz: files and streams a tool reads: JSON lines, key files, state.json."""

from __future__ import annotations

import io
import json

from hypothesis import given
from hypothesis import strategies as st

from phase_core.cli.jsonl import read_records
from phase_core.errors import PhaseError
from phase_core.identity import parse_key_file
from phase_core.state import StateStore
from tests.fuzz.strategies import JSON_VALUES, clean

LINE = st.one_of(st.binary(max_size=60), JSON_VALUES.map(lambda v: json.dumps(v).encode()))


@given(st.lists(LINE, max_size=6), st.integers(8, 200))
def test_json_lines(lines, cap):
    out = list(read_records(io.BytesIO(b"\n".join(lines)), max_line_bytes=cap))
    for _, rec in out:
        assert isinstance(rec, dict | PhaseError)


KEY_FILE = {"v": 1, "type": "secret_key", "alg": "ed25519", "seed": "11" * 32,
            "key": "d04ab232742bb4ab3a1368bd4615e4e6d0224ab71a016baf8520a332c9778737"}


@given(st.one_of(st.binary(max_size=200), JSON_VALUES.map(lambda v: json.dumps(v).encode()),
                 st.dictionaries(st.sampled_from(sorted(KEY_FILE)), JSON_VALUES)
                 .map(lambda d: json.dumps({**KEY_FILE, **d}).encode())))
def test_key_file(data):
    clean(parse_key_file, data)


STATE = st.one_of(
    st.binary(max_size=100),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.sampled_from(["v", "type", "marks"]), JSON_VALUES).map(
        lambda d: json.dumps({"v": 1, "type": "phase_state", **d}).encode()),
    st.dictionaries(st.text(max_size=8), st.one_of(
        JSON_VALUES, st.fixed_dictionaries({"version": JSON_VALUES, "id": JSON_VALUES})),
        max_size=3).map(lambda m: json.dumps(
            {"v": 1, "type": "phase_state", "marks": m}).encode()))


@given(STATE)
def test_state_file(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("state") / "state.json"
    path.write_bytes(data)
    store = StateStore(path)
    clean(store.marks)
    clean(store.commit_mark, "boot/stable/x86_64", 7, "sha256:" + "1" * 64)
