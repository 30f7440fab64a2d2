"""What phase-core computes without the modules it no longer imports at start-up.

``timefmt`` counts days itself instead of importing ``calendar``, and reads a time
without a pattern; ``units`` keeps whole numbers as ``int``, loads ``decimal`` for
fractions only and reads "256M" without a pattern; ``schema`` keeps its own copy
of the integer bound and checks one-class patterns with ``str.strip``. Each must
agree with what it replaced.
"""

from __future__ import annotations

import calendar
import subprocess
import sys
from decimal import ROUND_HALF_UP, Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from phase_core import canonical, digest, lazyre, schema, units
from phase_core.errors import Malformed
from phase_core.timefmt import _fields, _timegm, parse_time


@given(st.integers(1, 9999), st.integers(1, 12), st.integers(0, 99), st.integers(0, 99),
       st.integers(0, 99), st.integers(0, 99))
def test_timegm_is_calendars(y, mo, d, h, mi, s):
    assert _timegm(y, mo, d, h, mi, s) == calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0))


@pytest.mark.parametrize("y, mo", [(0, 1), (2026, 0), (2026, 13)])
def test_timegm_refuses_what_calendar_refuses(y, mo):
    with pytest.raises(ValueError):
        calendar.timegm((y, mo, 1, 0, 0, 0, 0, 0, 0))
    with pytest.raises(ValueError):
        _timegm(y, mo, 1, 0, 0, 0)


@pytest.mark.parametrize("text, secs", [
    ("1970-01-01T00:00:00Z", 0), ("2000-03-01T00:00:00Z", 951868800),
    ("2026-01-01T00:00:00Z", 1767225600), ("1969-12-31T23:59:59Z", -1),
])
def test_parse_time_known_values(text, secs):
    assert parse_time(text) == secs


@pytest.mark.parametrize("text", ["0000-01-01T00:00:00Z", "2026-02-29T00:00:00Z",
                                  "2026-13-01T00:00:00Z", "2026-01-01T24:00:00Z",
                                  "2026-01-01T00:60:00Z", "2024-02-30T00:00:00Z"])
def test_parse_time_refuses_impossible_dates(text):
    with pytest.raises(Malformed):
        parse_time(text)


def _old_size(text: str) -> int | None:
    """units.parse_size as it was, all in Decimal (None: refused)."""
    m = units._NUMBER.fullmatch(text)
    if m is None:
        return None
    number, key = Decimal(m.group(1)), m.group(2).lower()
    if len(key) > 1 and key[0] in "kmgt" and key[1:] in ("b", "ib"):
        key = key[0]
    if key not in units.SIZE_UNITS:
        return None
    value = number * units.SIZE_UNITS[key]
    if value != value.to_integral_value() or int(value) == 0:
        return None
    return int(value)


def _old_ms(text: str) -> int | None:
    m = units._NUMBER.fullmatch(text)
    if m is None or (m.group(2).lower() or "s") not in units.DURATION_UNITS_MS:
        return None
    number = Decimal(m.group(1))
    ms = int((number * units.DURATION_UNITS_MS[m.group(2).lower() or "s"])
             .to_integral_value(ROUND_HALF_UP))
    return ms if ms > 0 else None


def _new(fn, text):
    try:
        return fn(text)
    except units.UsageError:
        return None


@given(st.from_regex(r"[0-9]{1,6}(\.[0-9]{1,4})?(|b|K|k|KiB|M|MB|g|T|x)", fullmatch=True))
def test_sizes_as_before(text):
    assert _new(units.parse_size, text) == _old_size(text)


@given(st.from_regex(r"[0-9]{1,6}(\.[0-9]{1,4})?(|ms|s|sec|m|min|h|d)", fullmatch=True))
def test_durations_as_before(text):
    assert _new(units.parse_duration, text) == _old_ms(text)


def test_whole_numbers_do_not_load_decimal():
    code = ("import sys\nfrom phase_core import units\n"
            "units.parse_size('256M'); units.parse_duration('30s'); units.parse_size(7)\n"
            "assert 'decimal' not in sys.modules\n"
            "assert units.parse_size('1.5K') == 1536 and 'decimal' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("size", [0, 1, 100, digest.SMALL, digest.SMALL + 1, 3 << 20])
def test_digest_gives_hashlibs_digest(size):
    import hashlib
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    assert digest.content_id(data) == "sha256:" + hashlib.sha256(data).hexdigest()
    assert digest.digest(data) == hashlib.sha256(data).digest()
    h = digest.Hasher()
    for i in range(0, size, 70_000):  # pieces that cross SMALL
        h.update(memoryview(data)[i:i + 70_000])
    assert h.hexdigest() == hashlib.sha256(data).hexdigest()


def test_small_content_ids_do_not_load_openssl():
    code = ("import sys\nfrom phase_core import canonical\n"
            "canonical.content_id(b'x' * 1000)\n"
            "assert '_hashlib' not in sys.modules and 'hashlib' not in sys.modules\n"
            "canonical.content_id(b'x' * (1 << 20))\n"
            "assert '_hashlib' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_schema_bound_is_canonicals():
    assert schema.MAX_INT == canonical.MAX_INT


TIME_RE = r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})Z"


@given(st.from_regex(TIME_RE, fullmatch=True), st.text(max_size=22))
def test_time_fields_are_the_patterns(good, other):
    import re
    texts = [good, other, good[:19], good + "Z", good[1:]]
    texts += [good[:i] + c + good[i + 1:] for i in range(20)  # each place, each kind of char
              for c in ("-", "T", ":", "Z", "x", " ", "\uff12", "\u0663", "0", "")]
    for text in texts:
        m = re.fullmatch(TIME_RE, text)
        assert _fields(text) == (tuple(int(g) for g in m.groups()) if m else None), text


# every one-class pattern the project's schemas use, and their neighbours
PATTERNS = ["[a-z0-9_.-]+", "[0-9a-f]{32,64}", "[A-Za-z0-9_.+-]+", "[a-z0-9_]+", "[a-z_]+",
            "[0-9a-f]{128}", "[a-z0-9._-]*", "[-a]+", "[.-_]{2}", "[a-]{0,3}", "[A-Z]{3,}",
            "[^a]+", "[a-z]+x", "[a\\d]+", "x86_64|aarch64", "[A-Za-z_][A-Za-z0-9_]*"]


@pytest.mark.parametrize("pattern", PATTERNS)
@given(text=st.text(alphabet="abcxyzAZ0189_.-+/^ \n\u0660\uff41", max_size=70))
def test_one_class_patterns_match_as_compiled(pattern, text):
    import re
    rx = lazyre.Pattern(pattern)
    for t in (text, text[:32], "0123456789abcdef" * 2 + text[:2]):
        assert rx.matches(t) == (re.fullmatch(pattern, t) is not None), (pattern, t)


def test_which_patterns_need_no_compiling():
    assert lazyre.charset("[a-c_-]+") == ("abc_-", 1, None)
    assert lazyre.charset("[0-9a-f]{32,64}") == ("0123456789abcdef", 32, 64)
    assert lazyre.charset("[a-z]{3}")[1:] == (3, 3)
    for p in ("[^a]+", "[a-z]+x", "[a\\d]+", "x86_64|aarch64", "[A-Z]{3,}", "[z-a]+",
              "[A-Za-z_][A-Za-z0-9_]*"):
        assert lazyre.charset(p) is None, p
