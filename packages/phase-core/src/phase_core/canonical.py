"""Canonical JSON and content ids (docs/documents.md, "Canonical JSON").

The canonical bytes of a value are exactly
``json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()``
for values that obey the input rules: object keys are ASCII strings; numbers are
integers in the interoperable range ±(2**53 - 1); no floats, NaN or Infinity;
no duplicate keys; no lone surrogates; nesting at most ``MAX_DEPTH`` deep.
This is the only module that produces canonical bytes.

Encoding and parsing call CPython's JSON accelerator (``_json``, the C encoder and
scanner that ``json.dumps`` and ``json.loads`` use) directly: importing the ``json``
package costs about 2 ms of every cold start that signs or reads a document
(docs/performance.md, "plasm-exec cold start"). The bytes and the parse are the
``json`` package's, byte for byte (tests/phase_core/test_canonical.py).
"""

from __future__ import annotations

from _json import encode_basestring as _c_quote
from _json import make_encoder as _c_make_encoder
from _json import make_scanner as _c_make_scanner
from typing import Any, TypeGuard, cast

from phase_core.errors import BadContentId, Malformed, TooLarge

MAX_DEPTH = 32
MAX_INT = 2**53 - 1
DEFAULT_MAX_BYTES = 1 << 20  # 1 MiB per document
_MAX_INT_DIGITS = 16

_HEX = "0123456789abcdef"
_WS = " \t\n\r"  # JSON's whitespace

JSON = Any  # a parsed JSON value (dict, list, str, int, bool or None)


def _reject_float(text: str) -> Any:
    raise Malformed(f"floating-point number {text[:20]!r} is not allowed; use an integer",
                    slug="malformed")


def _reject_constant(text: str) -> Any:
    raise Malformed(f"{text} is not allowed in Phase documents")


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_INT_DIGITS:
        raise Malformed(f"integer {text[:20]}... is out of range (max ±{MAX_INT})")
    n = int(text)
    if not -MAX_INT <= n <= MAX_INT:
        raise Malformed(f"integer {n} is out of range (max ±{MAX_INT})")
    return n


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise Malformed(f"duplicate key {k[:64]!r}", hint="each key may appear once")
        if not k.isascii():
            raise Malformed(f"non-ASCII key {k[:64]!r}", hint="object keys must be ASCII")
        out[k] = v
    return out


class _Rules:
    """What the C scanner reads from a ``json.JSONDecoder``: the input rules' hooks."""

    strict = True  # no raw control characters inside strings
    object_hook = None
    object_pairs_hook = staticmethod(_pairs)
    parse_float = staticmethod(_reject_float)
    parse_int = staticmethod(_parse_int)
    parse_constant = staticmethod(_reject_constant)


_SCAN = _c_make_scanner(cast(Any, _Rules()))


def _not_json(v: Any) -> Any:  # ``check`` refuses such values before encoding
    raise Malformed(f"{type(v).__name__} is not a JSON value")


# markers, default, quote, indent, key separator, item separator, sort_keys, skipkeys,
# allow_nan: json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
_ENCODE = _c_make_encoder(None, _not_json, _c_quote, None, ":", ",", True, False, False)


def _invalid(msg: str, text: str, pos: int) -> Malformed:
    line = text.count("\n", 0, pos) + 1
    column = pos - text.rfind("\n", 0, pos)
    return Malformed(f"invalid JSON: {msg} at line {line} column {column}",
                     hint="is the file truncated?")


def _decode(text: str) -> Any:
    """One JSON value with optional whitespace around it, as ``json.loads`` reads it."""
    start = len(text) - len(text.lstrip(_WS))
    try:
        value, end = _SCAN(text, start)
    except StopIteration as e:
        raise _invalid("Expecting value", text, e.value) from None
    rest = text[end:]
    if rest.strip(_WS):
        raise _invalid("Extra data", text, end + len(rest) - len(rest.lstrip(_WS)))
    return value


def parse(data: bytes | str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> JSON:
    """Parse one JSON value under the canonical input rules, or raise.

    Raises ``TooLarge`` past ``max_bytes`` and ``Malformed`` for anything else
    wrong (syntax, duplicate keys, floats, depth, lone surrogates, bad UTF-8).
    """
    if len(data) > max_bytes:
        raise TooLarge(f"document is {len(data)} bytes, over the cap of {max_bytes}",
                       hint="documents are small; is this the right file?")
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise Malformed(f"not UTF-8 at byte {e.start}") from None
    else:
        text = data
    if not text.strip():
        raise Malformed("the input is empty", hint="expected one JSON document")
    if text.startswith("\ufeff"):
        raise Malformed("a byte-order mark is not allowed")
    try:
        value = _decode(text)
    except Malformed:
        raise
    except RecursionError:
        raise Malformed(f"nesting deeper than {MAX_DEPTH} levels") from None
    except ValueError as e:  # the scanner's json.JSONDecodeError; int conversion limits
        pos = getattr(e, "pos", None)
        if pos is not None:
            raise _invalid(getattr(e, "msg", str(e)), text, pos) from None
        raise Malformed(f"invalid JSON: {e}") from None
    check(value)
    return value


def check(value: JSON) -> None:
    """Raise ``Malformed`` unless ``value`` obeys the canonical input rules."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    push, pop = stack.append, stack.pop
    while stack:
        v, depth = pop()
        t = type(v)
        if t is dict or t is list:  # (the common shapes first; subclasses below)
            if depth > MAX_DEPTH:
                raise Malformed(f"nesting deeper than {MAX_DEPTH} levels")
            depth += 1
            for k, item in (v.items() if t is dict else enumerate(v)):
                if t is dict and (type(k) is not str or not k.isascii()):
                    if not isinstance(k, str) or not k.isascii():
                        raise Malformed(f"object key {k!r} is not an ASCII string")
                ti = type(item)
                if ti is str:
                    if not item.isascii():
                        _check_str(item)
                elif ti is int:
                    if not -MAX_INT <= item <= MAX_INT:
                        raise Malformed(f"integer {item} is out of range (max ±{MAX_INT})")
                elif ti is not bool and item is not None:
                    push((item, depth))
        elif t is str:
            if not v.isascii():
                _check_str(v)
        else:
            _check_other(v, depth, push)


def _check_str(v: str) -> None:
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        raise Malformed("string contains a lone surrogate") from None


def _check_other(v: Any, depth: int, push: Any) -> None:
    """``check`` for the rarer types: subclasses of dict, list and str, scalars."""
    if isinstance(v, dict):
        if depth > MAX_DEPTH:
            raise Malformed(f"nesting deeper than {MAX_DEPTH} levels")
        for k, item in v.items():
            if not isinstance(k, str) or not k.isascii():
                raise Malformed(f"object key {k!r} is not an ASCII string")
            push((item, depth + 1))
    elif isinstance(v, list):
        if depth > MAX_DEPTH:
            raise Malformed(f"nesting deeper than {MAX_DEPTH} levels")
        for item in v:
            push((item, depth + 1))
    elif isinstance(v, str):
        _check_str(v)
    elif isinstance(v, bool) or v is None:
        pass
    elif isinstance(v, int):
        if not -MAX_INT <= v <= MAX_INT:
            raise Malformed(f"integer {v} is out of range (max ±{MAX_INT})")
    elif isinstance(v, float):
        raise Malformed("floating-point numbers are not allowed; use an integer")
    else:
        raise Malformed(f"{type(v).__name__} is not a JSON value")


def canonical(value: JSON) -> bytes:
    """The canonical bytes of ``value`` (checked first)."""
    check(value)
    return "".join(_ENCODE(value, 0)).encode("utf-8")


def content_id(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``."""
    from phase_core import digest  # _sha256 for small data until OpenSSL is loaded
    return digest.content_id(data)


def is_hex(value: object, length: int) -> TypeGuard[str]:
    """``value`` is a string of exactly ``length`` lowercase hex digits (as
    ``[0-9a-f]{length}``, without compiling a pattern)."""
    return isinstance(value, str) and len(value) == length and not value.strip(_HEX)


def is_content_id(value: object) -> TypeGuard[str]:
    return (isinstance(value, str) and value.startswith("sha256:")
            and is_hex(value[7:], 64))


def check_content_id(value: object, what: str = "content id") -> str:
    """Return ``value`` if it is ``sha256:<64 lowercase hex>``, else raise."""
    if not is_content_id(value):
        shown = repr(value)[:80]
        raise BadContentId(f"{what} {shown} is not of the form sha256:<64 lowercase hex>")
    assert isinstance(value, str)
    return value


def content_hex(cid: str) -> str:
    """The 64-hex digest part of a checked content id."""
    return check_content_id(cid)[7:]
