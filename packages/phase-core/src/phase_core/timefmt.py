"""RFC 3339 UTC times with second precision: ``2026-11-27T03:26:44Z``.

Times are handled as integer Unix seconds; the clock is always injected.
"""

from __future__ import annotations

import re
import time

from phase_core.errors import Malformed

# ASCII digits only: "\d" would also match other scripts' digits (e.g. fullwidth "２").
_RE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})Z")


def parse_time(value: object, what: str = "time") -> int:
    """Unix seconds of an RFC 3339 UTC time string, or raise ``Malformed``."""
    if not isinstance(value, str):
        raise Malformed(f"{what} must be an RFC 3339 UTC time string like 2026-11-27T03:26:44Z")
    m = _RE.fullmatch(value)
    if m is None:
        raise Malformed(f"{what} {value[:40]!r} is not of the form YYYY-MM-DDTHH:MM:SSZ")
    y, mo, d, h, mi, s = (int(g) for g in m.groups())
    try:
        import calendar  # here: only parsing needs it (start-up of every tool)
        st = time.struct_time((y, mo, d, h, mi, s, 0, 0, 0))
        secs = calendar.timegm(st)
        if time.gmtime(secs)[:6] != (y, mo, d, h, mi, s):
            raise ValueError
    except (ValueError, OverflowError):
        raise Malformed(f"{what} {value!r} is not a valid date and time") from None
    return secs


def format_time(secs: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(secs)))


def now() -> int:
    """The wall clock, for the impure edges that inject it into pure code."""
    return int(time.time())
