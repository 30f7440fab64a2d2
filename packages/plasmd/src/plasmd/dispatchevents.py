"""What the dispatcher's scheduler (``dispatchsched``) tells its caller: each a
frozen record of one decision about one job (by its input index)."""

from __future__ import annotations

from dataclasses import dataclass

from plasmd import quorum as q


@dataclass(frozen=True)
class Place:
    index: int
    node: str


@dataclass(frozen=True)
class Accepted:
    index: int
    decision: q.Accept
    attempts: int = 0


@dataclass(frozen=True)
class Disputed:
    index: int
    decision: q.Disputed
    attempts: int = 0


@dataclass(frozen=True)
class Failed:
    index: int
    slug: str
    message: str
    errors: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Dissent:
    """A replica that ended after its job was accepted, with another output."""

    index: int
    node: str
    key: q.Key
    accepted: q.Key


@dataclass(frozen=True)
class Retired:
    """Nothing of the job runs any more: its memory may go."""

    index: int


Event = Place | Accepted | Disputed | Failed | Dissent | Retired
