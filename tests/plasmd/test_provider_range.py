"""The HTTP provider's Range parser: hostile headers give a full answer or 416, never a crash."""

from __future__ import annotations

import pytest

from plasmd.provider import _parse_range


@pytest.mark.parametrize("value", ["bytes=" + "9" * 5000 + "-", "bytes=-" + "1" * 5000,
                                   "bytes=٣-٤", "bytes=0-" + "²"])
def test_oversized_or_non_ascii_ranges_are_ignored(value):
    assert _parse_range(value, 1000) is None


def test_ordinary_ranges_still_parse():
    assert _parse_range("bytes=10-19", 1000) == (10, 19)
    assert _parse_range("bytes=-10", 1000) == (990, 999)
    assert _parse_range("bytes=1000-", 1000) == "unsatisfiable"
