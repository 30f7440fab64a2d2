import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from phase_core.canonical import (
    MAX_DEPTH,
    MAX_INT,
    canonical,
    check,
    check_content_id,
    content_id,
    parse,
)
from phase_core.errors import BadContentId, Malformed, TooLarge

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-MAX_INT, MAX_INT) | st.text(),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(alphabet=st.characters(max_codepoint=127), max_size=8),
                      inner, max_size=4),
    max_leaves=20,
)


def test_canonical_is_sorted_compact_utf8():
    assert canonical({"b": 1, "a": [True, None, "é"]}) == '{"a":[true,null,"é"],"b":1}'.encode()


@given(json_values)
def test_canonical_matches_the_design_formula_and_round_trips(value):
    expected = json.dumps(value, sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False).encode("utf-8")
    assert canonical(value) == expected
    assert parse(expected) == value


def _json_package_parse(text: str) -> Any:
    """The reference: the json package's decoder with the same hooks, its errors as text."""
    def pairs(p: list[tuple[str, Any]]) -> dict[str, Any]:
        if len({k for k, _ in p}) != len(p) or not all(k.isascii() for k, _ in p):
            raise Malformed("key")
        return dict(p)

    def refuse(t: str) -> Any:
        raise Malformed("number")

    def integer(t: str) -> int:
        if len(t.lstrip("-")) > 16 or not -MAX_INT <= int(t) <= MAX_INT:
            raise Malformed("number")
        return int(t)

    dec = json.JSONDecoder(object_pairs_hook=pairs, parse_float=refuse, parse_int=integer,
                           parse_constant=refuse)
    try:
        return ("ok", dec.decode(text))
    except json.JSONDecodeError as e:
        return ("invalid", f"{e.msg} at line {e.lineno} column {e.colno}")
    except Malformed:
        return ("refused", None)


def _ours(text: str) -> Any:
    try:
        return ("ok", parse(text.encode("utf-8", "surrogatepass")))
    except Malformed as e:
        msg = e.message
        if msg.startswith("invalid JSON: "):
            return ("invalid", msg.removeprefix("invalid JSON: "))
        return ("refused", None)


json_texts = st.one_of(
    json_values.map(json.dumps),
    st.tuples(json_values, st.sampled_from(["", " ", "\n", "\t\r\n "]),
              st.sampled_from(["", " ", "\n", "x", " 1", "]", "{}"])).map(
        lambda t: t[1] + json.dumps(t[0], indent=1) + t[2]),
    st.tuples(json_values, st.integers(0, 200)).map(lambda t: json.dumps(t[0])[:t[1]]),
    st.text(alphabet='{}[]":,0123456789.-eEtrufalsn \n\\u', min_size=1, max_size=40),
)


@given(json_texts)
def test_parse_reads_json_as_the_json_package_does(text):
    """The C scanner called directly accepts, refuses and reports errors (message, line,
    column) exactly as the json package's decoder with the same rules does."""
    if not text.strip() or text.startswith("\ufeff"):
        return  # refused before any parsing, by both
    expected = _json_package_parse(text)
    got = _ours(text)
    if expected[0] == "refused":  # a rule (duplicate, float, range): the kind is enough
        assert got[0] == "refused", (text, got)
    else:
        assert got == expected, text


@pytest.mark.parametrize("text, why", [
    ('{"a":1,"a":2}', "duplicate key"),
    ('{"a":1.5}', "floating-point"),
    ('{"a":1e3}', "floating-point"),
    ('{"a":NaN}', "NaN"),
    ('{"a":Infinity}', "Infinity"),
    ('{"a":-Infinity}', "Infinity"),
    ('{"a":9007199254740992}', "out of range"),
    ('{"é":1}', "non-ASCII key"),
    ('{"a":"\\ud800"}', "lone surrogate"),
    ('{"a":', "invalid JSON"),
    ("", "empty"),
    ("\ufeff{}", "byte-order mark"),
])
def test_parse_rejects(text, why):
    with pytest.raises(Malformed, match=why):
        parse(text.encode())


def test_parse_rejects_deep_nesting_and_accepts_the_cap():
    ok = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert parse(ok) is not None
    with pytest.raises(Malformed, match="nesting"):
        parse("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))
    with pytest.raises(Malformed):
        parse("[" * 100_000 + "]" * 100_000, max_bytes=1 << 20)


def test_parse_size_cap_before_parsing():
    with pytest.raises(TooLarge):
        parse(b" " * 11 + b"{}", max_bytes=10)


def test_parse_rejects_bad_utf8():
    with pytest.raises(Malformed, match="UTF-8"):
        parse(b'{"a":"\xff"}')


def test_canonical_refuses_floats_and_foreign_types():
    for bad in ({"a": 1.0}, {"a": {1, 2}}, {1: "x"}, {"a": 2**60}):
        with pytest.raises(Malformed):
            canonical(bad)


def test_content_ids():
    cid = content_id(b"")
    assert cid == "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert check_content_id(cid) == cid
    for bad in ["sha256:" + "A" * 64, "e3b0c442" * 8, "sha256:../../etc/passwd", "sha1:" + "0" * 40,
                "sha256:" + "0" * 63, None, 5]:
        with pytest.raises(BadContentId):
            check_content_id(bad)


class _D(dict):  # subclasses take check's slower path; the rules are the same
    pass


@pytest.mark.parametrize(("value", "why"), [
    ({"a": [1, {"b": 1.5}]}, "floating-point"),
    ({"a": [{"b": "x\ud800"}]}, "lone surrogate"),
    ({"a": {"é": 1}}, "not an ASCII string"),
    ({"a": {1: 1}}, "not an ASCII string"),
    ([[{"a": -(2 ** 53)}]], "out of range"),
    ([0, b"bytes"], "bytes is not a JSON value"),
    (_D(a=_D(b=2.0)), "floating-point"),
    (_D({"é": 1}), "not an ASCII string"),
    (["x\udfff"], "lone surrogate"),
])
def test_check_finds_a_bad_value_at_any_depth_and_in_subclasses(value, why):
    with pytest.raises(Malformed, match=why):
        check(value)


def test_check_accepts_every_json_shape_and_counts_depth_through_lists():
    check({"s": "ünïcode ✓", "i": 2 ** 53 - 1, "n": None, "t": True, "l": [[], {}, ""],
           "d": _D(x=[_D()])})
    deep: Any = 1
    for _ in range(MAX_DEPTH):
        deep = [deep]
    check(deep)
    with pytest.raises(Malformed, match="nesting"):
        check([deep])


hexish = st.text(alphabet="0123456789abcdefABCDEFgz_- \n\u0660\uff10", max_size=130)


@given(st.one_of(hexish, st.sampled_from(["a" * 64, "0" * 128, "sha256:" + "f" * 64]),
                 hexish.map(lambda t: "sha256:" + t)))
def test_hex_and_type_checks_are_their_patterns(text):
    """The string-method checks (no pattern compiled on a cold start) accept exactly
    what the patterns of docs/documents.md accept."""
    import re

    from phase_core.canonical import is_content_id, is_hex
    from phase_core.signing import is_type_name
    for n in (32, 64, 128):
        assert is_hex(text, n) == bool(re.fullmatch(f"[0-9a-f]{{{n}}}", text))
        assert is_hex(text[:n], n) == bool(re.fullmatch(f"[0-9a-f]{{{n}}}", text[:n]))
    assert is_content_id(text) == bool(re.fullmatch(r"sha256:[0-9a-f]{64}", text))
    for name in (text, text.lower()[:33], text.lower()[:32].replace(" ", "_")):
        assert is_type_name(name) == bool(re.fullmatch(r"[a-z][a-z0-9_]{0,31}", name))
    assert not is_hex(None, 64) and not is_content_id(7) and not is_type_name(b"receipt")
