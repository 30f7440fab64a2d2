"""Small value classes for the run path, without the ``dataclasses`` module.

``dataclasses`` imports ``inspect`` (and with it ``ast``, ``dis``, ``tokenize``):
about 7 ms of a cold ``plasm-exec run``, whose whole budget is a few tens of
milliseconds (docs/performance.md). The classes of the run path (``RunSpec``,
``RunResult``, ``Outcome``, ``RunControl``, ``Program``) derive from ``Value``
instead: each names its fields in ``_fields`` and writes its own ``__init__``;
``Value`` gives them what a dataclass would: a readable ``repr``, equality
field by field, and ``replace``. ``Frozen`` values also refuse assignment
after ``__init__`` and are hashable.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing's, without importing typing
if TYPE_CHECKING:
    from typing import (
        Any,
        Self,  # not a TypeVar bound by name: that compiles code at import
    )


class Value:
    _fields: tuple[str, ...] = ()
    _hidden: tuple[str, ...] = ()  # left out of repr (large or opaque)

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, f) for f in self._fields)

    def __repr__(self) -> str:
        shown = ", ".join(f"{f}={getattr(self, f)!r}" for f in self._fields
                          if f not in self._hidden)
        return f"{type(self).__name__}({shown})"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Value)
        return self._values() == other._values()

    __hash__ = None  # type: ignore[assignment]  # mutable: like a dataclass with eq

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes`` (as ``dataclasses.replace``)."""
        unknown = set(changes) - set(self._fields)
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field(s) {', '.join(sorted(unknown))}")
        kw = {f: getattr(self, f) for f in self._fields}
        kw.update(changes)
        return type(self)(**kw)


class Frozen(Value):
    """A value whose fields cannot change once ``__init__`` has set them."""

    def _set(self, **fields: Any) -> None:
        for k, v in fields.items():
            object.__setattr__(self, k, v)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"cannot assign to field {name!r} of a frozen "
                             f"{type(self).__name__}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r} of a frozen {type(self).__name__}")

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(self._values())


class Outcome(Frozen):
    """How a run ended. ``ended``: exited | trapped | out_of_fuel | timeout |
    memory_limit | output_limit, or interrupted (the caller cancelled the run) /
    broken_pipe (`run`: nobody reads our stdout any more): these two are never
    put in a receipt."""

    _fields = ("ended", "exit_code", "trap", "fuel_consumed", "fuel_exact", "wall_ms",
               "message")
    ended: str
    exit_code: int | None
    trap: str | None
    fuel_consumed: int
    fuel_exact: bool
    wall_ms: int
    message: str | None

    def __init__(self, ended: str, exit_code: int | None, trap: str | None,
                 fuel_consumed: int, fuel_exact: bool, wall_ms: int,
                 message: str | None = None) -> None:
        self._set(ended=ended, exit_code=exit_code, trap=trap, fuel_consumed=fuel_consumed,
                  fuel_exact=fuel_exact, wall_ms=wall_ms, message=message)
