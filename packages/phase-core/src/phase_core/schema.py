"""A small declarative checker for document bodies.

Each check takes ``(value, where)`` and returns the value or raises
``Malformed`` naming the field. docs/schemas/ holds the same rules as JSON
Schema for other implementations; a test keeps the two in agreement.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from phase_core.errors import Malformed
from phase_core.lazyre import Pattern

TYPE_CHECKING = False  # typing's, without importing typing
if TYPE_CHECKING:  # the alias is for annotations only
    from typing import Any

    Check = Callable[[Any, str], Any]
# canonical.MAX_INT (a test keeps them equal); canonical and timefmt are imported by
# the checks that need them, so that checking limits at a tool's start-up loads neither
MAX_INT = 2**53 - 1


def fail(where: str, msg: str) -> Malformed:
    return Malformed(f"{where}: {msg}")


def string(max_len: int = 256, pattern: str | None = None, min_len: int = 0) -> Check:
    rx = Pattern(pattern) if pattern else None

    def check(v: Any, where: str) -> str:
        if not isinstance(v, str):
            raise fail(where, "must be a string")
        if not min_len <= len(v) <= max_len:
            raise fail(where, f"length must be {min_len}..{max_len}")
        if rx is not None and not rx.matches(v):
            raise fail(where, f"{v[:64]!r} does not match {rx.pattern}")
        return v
    return check


def c_string(max_len: int = 4096) -> Check:
    """A string a process receives through C (argv, environment): no NUL character.

    C strings end at the first NUL, so ``"x\\0B=evil"`` would silently become ``"x"``;
    such a value is refused instead of being cut.
    """
    inner = string(max_len)

    def check(v: Any, where: str) -> str:
        inner(v, where)
        at = v.find("\0")
        if at >= 0:
            raise fail(where, f"contains a NUL character at index {at}; "
                              "an argument or environment value cannot hold one")
        return str(v)
    return check


def integer(lo: int = 0, hi: int = MAX_INT) -> Check:
    def check(v: Any, where: str) -> int:
        if not isinstance(v, int) or isinstance(v, bool):
            raise fail(where, "must be an integer")
        if not lo <= v <= hi:
            raise fail(where, f"must be between {lo} and {hi}")
        return v
    return check


def boolean(v: Any, where: str) -> bool:
    if not isinstance(v, bool):
        raise fail(where, "must be true or false")
    return v


def one_of(*choices: str) -> Check:
    def check(v: Any, where: str) -> str:
        if v not in choices:
            raise fail(where, f"must be one of {', '.join(choices)}")
        return str(v)
    return check


def content_id(v: Any, where: str) -> str:
    from phase_core.canonical import is_content_id
    if not is_content_id(v):
        raise fail(where, "must be a content id sha256:<64 lowercase hex>")
    return v


def node_id(v: Any, where: str) -> str:
    from phase_core.canonical import is_hex
    if not is_hex(v, 64):
        raise fail(where, "must be 64 lowercase hex characters (an Ed25519 public key)")
    return v


def time_str(v: Any, where: str) -> int:
    """Checks an RFC 3339 string; returns Unix seconds."""
    from phase_core.timefmt import parse_time
    return parse_time(v, where)


def nullable(inner: Check) -> Check:
    def check(v: Any, where: str) -> Any:
        return None if v is None else inner(v, where)
    return check


def array(item: Check, max_items: int, min_items: int = 0, unique: bool = False) -> Check:
    def check(v: Any, where: str) -> list[Any]:
        if not isinstance(v, list):
            raise fail(where, "must be an array")
        if not min_items <= len(v) <= max_items:
            raise fail(where, f"must have {min_items}..{max_items} items")
        out = [item(x, f"{where}[{i}]") for i, x in enumerate(v)]
        if unique and len({repr(x) for x in v}) != len(v):
            raise fail(where, "items must be unique")
        return out
    return check


def str_map(key: Check, value: Check, max_items: int) -> Check:
    def check(v: Any, where: str) -> dict[str, Any]:
        if not isinstance(v, dict):
            raise fail(where, "must be an object")
        if len(v) > max_items:
            raise fail(where, f"must have at most {max_items} entries")
        return {key(k, f"{where} key"): value(x, f"{where}.{k}") for k, x in v.items()}
    return check


def obj(required: Mapping[str, Check], optional: Mapping[str, Check] | None = None,
        *, open_ended: bool = False) -> Check:
    """An object with exactly these fields (unknown ones rejected unless ``open_ended``)."""
    optional = optional or {}

    def check(v: Any, where: str) -> dict[str, Any]:
        if not isinstance(v, dict):
            raise fail(where, "must be an object")
        missing = [k for k in required if k not in v]
        if missing:
            raise fail(where, f"missing field(s) {', '.join(missing)}")
        if not open_ended:
            unknown = [k for k in v if k not in required and k not in optional]
            if unknown:
                raise fail(where, f"unknown field(s) {', '.join(sorted(unknown)[:8])}")
        for k, c in required.items():
            c(v[k], f"{where}.{k}")
        for k, c in optional.items():
            if k in v:
                c(v[k], f"{where}.{k}")
        return v
    return check
