"""Each rule of docs/documents.md "Canonical JSON" holds for the one encoder and parser."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from phase_core.canonical import MAX_DEPTH, canonical, content_id, parse
from phase_core.errors import Malformed

SHORT = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
         "\t": "\\t"}


def reference_string(s: str) -> bytes:
    """The string rules of docs/documents.md, written out independently of json."""
    out = ['"']
    for ch in s:
        if ch in SHORT:
            out.append(SHORT[ch])
        elif ord(ch) < 0x20:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)  # everything else as itself, non-ASCII as raw UTF-8
    out.append('"')
    return "".join(out).encode("utf-8")


@pytest.mark.parametrize(("ch", "escaped"), [
    *SHORT.items(), ("\x00", "\\u0000"), ("\x01", "\\u0001"), ("\x1b", "\\u001b"),
    ("\x1f", "\\u001f"), ("\x0b", "\\u000b")])
def test_escaped_characters(ch, escaped):
    assert canonical(ch) == f'"{escaped}"'.encode()


@pytest.mark.parametrize("ch", ["/", "\x7f", "\x80", "é", "\u2028", "\u2029", "\ufeff",
                                "€", "\U0001f600", "'", "<", "&"])
def test_characters_written_as_themselves(ch):
    assert canonical(ch) == b'"' + ch.encode("utf-8") + b'"'


def test_hex_escapes_are_lowercase_and_nothing_else_uses_u_escapes():
    out = canonical("".join(chr(i) for i in range(0x20)) + "é€😀")
    assert b"\\u001B" not in out and b"\\u001b" in out
    assert out.count(b"\\u") == 0x20 - len([c for c in SHORT if ord(c) < 0x20])
    assert "é€😀".encode() in out


@given(st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=40))
def test_strings_match_the_written_rules(s):
    assert canonical(s) == reference_string(s)
    assert parse(canonical(s)) == s


def test_object_layout():
    assert canonical({"b": [1, -2, None, True, False], "a": {}, "A": ""}) == \
        b'{"A":"","a":{},"b":[1,-2,null,true,false]}'  # keys sorted by code point, no spaces


def test_depth_counts_containers_from_one():
    def nested(n: int) -> str:
        return "[" * n + "]" * n
    assert parse(nested(MAX_DEPTH)) is not None  # the outermost array is depth 1
    with pytest.raises(Malformed, match="nesting"):
        parse(nested(MAX_DEPTH + 1))
    obj = '{"a":' * MAX_DEPTH + '"scalars add no depth"' + "}" * MAX_DEPTH
    assert parse(obj) is not None
    with pytest.raises(Malformed, match="nesting"):
        parse('{"a":' * (MAX_DEPTH + 1) + "1" + "}" * (MAX_DEPTH + 1))


def test_content_id_form():
    assert content_id(b"") == ("sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca4"
                               "95991b7852b855")
