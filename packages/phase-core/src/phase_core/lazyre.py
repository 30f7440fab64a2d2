"""Regular expressions that cost nothing until used, and little when simple.

Compiling a pattern costs 0.1–0.3 ms of a cold start (docs/performance.md,
"plasm-exec cold start"), and most of a module's patterns are never used by a
given command: a plain ``plasm-exec run`` parses no size with a fraction and no
time, and signs no document. A ``Pattern`` is compiled on its first
``fullmatch``. ``matches`` answers "does the whole text match" and
needs no compiling at all for the most common shape of the project's field
rules, one bracketed class repeated (``[a-z0-9_.-]+``, ``[0-9a-f]{32,64}``): the
text is checked with ``str.strip`` against the class's characters.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing's, without importing typing
if TYPE_CHECKING:
    import re


class Pattern:
    """``re.compile(pattern)``, compiled on the first match."""

    __slots__ = ("_charset", "_rx", "pattern")

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self._rx: re.Pattern[str] | None = None
        self._charset = charset(pattern)

    def _compiled(self) -> re.Pattern[str]:
        rx = self._rx
        if rx is None:
            import re
            rx = self._rx = re.compile(self.pattern)
        return rx

    def fullmatch(self, text: str) -> re.Match[str] | None:
        return self._compiled().fullmatch(text)

    def matches(self, text: str) -> bool:
        """``fullmatch(text) is not None``."""
        cs = self._charset
        if cs is None:
            return self._compiled().fullmatch(text) is not None
        chars, lo, hi = cs
        return lo <= len(text) and (hi is None or len(text) <= hi) and not text.strip(chars)


def charset(pattern: str) -> tuple[str, int, int | None] | None:
    """For a pattern that is one bracketed class of literal characters and ``a-z``
    ranges, repeated ``+``, ``*``, ``{n}`` or ``{m,n}``: the class's characters and
    the least and most repeats (None: no most). None for any other pattern."""
    if not pattern.startswith("["):
        return None
    cls, bracket, rep = pattern[1:].partition("]")
    if not bracket or not cls or cls[0] == "^" or any(c in cls for c in "\\[]"):
        return None
    chars: list[str] = []
    i = 0
    while i < len(cls):
        if i + 2 < len(cls) and cls[i + 1] == "-":  # a range; a last or first "-" is itself
            first, last = ord(cls[i]), ord(cls[i + 2])
            if first > last:
                return None
            chars.extend(map(chr, range(first, last + 1)))
            i += 3
        else:
            chars.append(cls[i])
            i += 1
    lo: int
    hi: int | None
    if rep in ("+", "*"):
        lo, hi = (1 if rep == "+" else 0), None
    elif rep.startswith("{") and rep.endswith("}"):
        a, comma, b = rep[1:-1].partition(",")
        if not (a.isascii() and a.isdigit()) or (comma and not (b.isascii() and b.isdigit())):
            return None
        lo = int(a)
        hi = int(b) if comma else lo
    else:
        return None
    return "".join(chars), lo, hi
