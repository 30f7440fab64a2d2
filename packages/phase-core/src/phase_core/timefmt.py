"""RFC 3339 UTC times with second precision: ``2026-11-27T03:26:44Z``.

Times are handled as integer Unix seconds; the clock is always injected.
"""

from __future__ import annotations

import functools
import time

from phase_core.errors import Malformed

_DIGITS = "0123456789"  # ASCII only: str.isdigit would take other scripts' digits too


def _fields(value: str) -> tuple[int, ...] | None:
    """The six numbers of ``YYYY-MM-DDTHH:MM:SSZ`` (as the pattern
    ``([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})Z``, with no
    pattern to compile on a cold start), or None."""
    if len(value) != 20 or value[4:20:3] != "--T::Z":  # the separators, 3 apart
        return None
    parts = (value[0:4], value[5:7], value[8:10], value[11:13], value[14:16], value[17:19])
    if any(p.strip(_DIGITS) for p in parts):
        return None
    return tuple(map(int, parts))


def parse_time(value: object, what: str = "time") -> int:
    """Unix seconds of an RFC 3339 UTC time string, or raise ``Malformed``."""
    if not isinstance(value, str):
        raise Malformed(f"{what} must be an RFC 3339 UTC time string like 2026-11-27T03:26:44Z")
    secs = _parsed(value) if len(value) == 20 else None
    return secs if secs is not None else _parse(value, what)


def _parse(value: str, what: str) -> int:
    fields = _fields(value)
    if fields is None:
        raise Malformed(f"{what} {value[:40]!r} is not of the form YYYY-MM-DDTHH:MM:SSZ")
    y, mo, d, h, mi, s = fields
    try:
        secs = _timegm(y, mo, d, h, mi, s)
        if time.gmtime(secs)[:6] != (y, mo, d, h, mi, s):
            raise ValueError
    except (ValueError, OverflowError):
        raise Malformed(f"{what} {value!r} is not a valid date and time") from None
    return secs


@functools.lru_cache(maxsize=256)
def _parsed(value: str) -> int | None:
    """``parse_time`` of a well-formed time, remembered (a node parses the same few
    times many times a second); None for anything else (``parse_time`` says why)."""
    try:
        return _parse(value, "time")
    except Malformed:
        return None


def _timegm(y: int, mo: int, d: int, h: int, mi: int, s: int) -> int:
    """``calendar.timegm`` of these fields, without importing ``calendar`` (and with it
    ``datetime`` and ``locale``: a few ms of every tool's start-up).

    As ``calendar.timegm``: ``ValueError`` for a year outside 1..9999 or a month
    outside 1..12; the other fields are not range-checked (the caller compares
    the result's ``gmtime`` with them). Days are counted in the proleptic
    Gregorian calendar from 1970-01-01.
    """
    if not 1 <= y <= 9999 or not 1 <= mo <= 12:
        raise ValueError(f"year {y} or month {mo} out of range")
    yy = y - (mo <= 2)  # the year of a March-based calendar: leap days come last
    era, yoe = divmod(yy, 400)
    doy = (153 * (mo + (-3 if mo > 2 else 9)) + 2) // 5  # days from March 1 to month 1st
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy  # day of the 400-year era
    days = era * 146097 + doe - 719468 + d - 1  # 719468: 0000-03-01 to 1970-01-01
    return ((days * 24 + h) * 60 + mi) * 60 + s


def format_time(secs: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(secs)))


def now() -> int:
    """The wall clock, for the impure edges that inject it into pure code."""
    return int(time.time())
