"""One spelling for durations and sizes, on every command line and in every config file.

Durations: a number and a unit, ``ms``, ``s``, ``m`` (minutes) or ``h``:
``1500ms``, ``30s``, ``1.5s``, ``2m``. A bare number takes the caller's unit
(``bare``): seconds for ``--timeout``, milliseconds for ``--timeout-ms`` and
``wall_ms``. The result is whole milliseconds.

Sizes: a number and a unit, ``B``, ``K``, ``M``, ``G`` or ``T``, each a power of
1024, also spelled ``KB``/``KiB`` and in lower case: ``256M``, ``64KiB``,
``1.5G``, ``1048576``. A bare number is bytes. The result is whole bytes.

Zero and negative values are refused unless the caller allows zero; so are
NaN, infinities, exponents and anything longer than 64 characters. Errors are
``UsageError`` (exit 64) by default; a config reader passes
``error=ConfigError`` (exit 78).
"""

from __future__ import annotations

from phase_core.errors import PhaseError, UsageError
from phase_core.lazyre import Pattern

TYPE_CHECKING = False  # typing's, without importing typing
if TYPE_CHECKING:
    from decimal import Decimal

MAX_TEXT = 64
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_NUMBER = Pattern(r"\s*([0-9]+(?:\.[0-9]+)?|\.[0-9]+)\s*([A-Za-z]*)\s*")  # ASCII digits only

DURATION_UNITS_MS: dict[str, int] = {
    "ms": 1, "s": 1000, "sec": 1000, "m": 60_000, "min": 60_000, "h": 3_600_000,
}
SIZE_UNITS: dict[str, int] = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30,
                              "t": 1 << 40}


def _number(digits: str) -> int | Decimal:
    """A whole number as an int; one with a fraction as an exact ``Decimal``.

    ``decimal`` is imported only for a fraction: every tool parses its default
    sizes and durations at start-up, and they are whole numbers.
    """
    if digits.isdigit():
        return int(digits)
    from decimal import Decimal
    return Decimal(digits)


def _whole(value: int | Decimal, round_half_up: bool) -> int | Decimal:
    """``value`` rounded to a whole number (half up), or as it is without rounding."""
    if isinstance(value, int):
        return value
    from decimal import ROUND_HALF_UP
    return value.to_integral_value(ROUND_HALF_UP) if round_half_up else value.to_integral_value()


def _split(text: str | int, what: str, kind: str, example: str,
           error: type[PhaseError]) -> tuple[int | Decimal, str]:
    if isinstance(text, bool):
        raise error(f"{what} must be a {kind}, got {text!r}", hint=f"for example {example}")
    if isinstance(text, int):
        if text < 0:
            raise error(f"{what} must not be negative, got {text}")
        return int(text), ""
    if not isinstance(text, str) or len(text) > MAX_TEXT:
        raise error(f"{what} must be a {kind}, got {str(text)[:MAX_TEXT]!r}",
                    hint=f"for example {example}")
    if text.strip().startswith("-"):
        raise error(f"{what} must not be negative, got {text!r}", hint=f"for example {example}")
    digits = text.rstrip(_LETTERS)  # the common "256M", "64KiB", "1048576": no pattern
    if digits and not digits.strip("0123456789"):
        return int(digits), text[len(digits):]
    m = _NUMBER.fullmatch(text)
    if m is None:
        raise error(f"{what} must be a {kind}, got {text!r}", hint=f"for example {example}")
    return _number(m.group(1)), m.group(2)


def parse_duration(text: str | int, what: str = "duration", *, bare: str = "s",
                   allow_zero: bool = False, max_ms: int | None = None,
                   error: type[PhaseError] = UsageError) -> int:
    """``"30s"``, ``"1500ms"``, ``"2m"``, ``"1.5s"`` (or a bare number in ``bare`` units)
    → whole milliseconds."""
    example = "30s, 1500ms, 2m or 1.5s"
    number, unit = _split(text, what, "duration", example, error)
    unit = unit.lower() or bare
    if unit not in DURATION_UNITS_MS:
        raise error(f"{what}: unknown unit {unit!r} in {text!r}",
                    hint=f"units are ms, s, m and h; for example {example}")
    ms = int(_whole(number * DURATION_UNITS_MS[unit], True))
    if ms == 0 and number != 0:
        raise error(f"{what} {text!r} is shorter than a millisecond")
    if ms == 0 and not allow_zero:
        raise error(f"{what} must be longer than zero, got {text!r}",
                    hint=f"for example {example}")
    if max_ms is not None and ms > max_ms:
        raise error(f"{what} {text!r} is longer than the most allowed, {format_ms(max_ms)}")
    return ms


def parse_size(text: str | int, what: str = "size", *, allow_zero: bool = False,
               max_bytes: int | None = None, error: type[PhaseError] = UsageError) -> int:
    """``"256M"``, ``"64KiB"``, ``"1.5G"``, ``"1048576"`` → whole bytes (units are 1024-based)."""
    example = "256M, 64KiB or 1048576"
    number, unit = _split(text, what, "size", example, error)
    key = unit.lower()
    if len(key) > 1 and key[0] in "kmgt" and key[1:] in ("b", "ib"):
        key = key[0]  # KB, KiB, MB, MiB…
    if key not in SIZE_UNITS:
        raise error(f"{what}: unknown unit {unit!r} in {text!r}",
                    hint=f"units are B, K, M, G and T (powers of 1024); for example {example}")
    value = number * SIZE_UNITS[key]
    if value != _whole(value, False):
        raise error(f"{what} {text!r} is not a whole number of bytes")
    size = int(value)
    if size == 0 and not allow_zero:
        raise error(f"{what} must be more than zero bytes, got {text!r}",
                    hint=f"for example {example}")
    if max_bytes is not None and size > max_bytes:
        raise error(f"{what} {text!r} is more than the most allowed, {format_size(max_bytes)}")
    return size


def format_ms(ms: int) -> str:
    """The shortest exact spelling: ``30s``, ``1500ms``, ``2m``."""
    for unit in ("h", "m", "s"):
        if ms and ms % DURATION_UNITS_MS[unit] == 0:
            return f"{ms // DURATION_UNITS_MS[unit]}{unit}"
    return f"{ms}ms"


def format_size(n: int) -> str:
    """The shortest exact spelling: ``256M``, ``64K``, ``1000``."""
    for unit in ("T", "G", "M", "K"):
        mult = SIZE_UNITS[unit.lower()]
        if n and n % mult == 0:
            return f"{n // mult}{unit}"
    return str(n)
