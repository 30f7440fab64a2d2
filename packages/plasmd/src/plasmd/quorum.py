"""Redundancy's arithmetic: when do K of N receipts agree (pure; docs/dispatch.md).

A replica's vote is the part of its verified receipt that says what the job
produced: ``(ended, exit_code, stdout id, stderr id)``. Two workers agree when
their votes are equal, byte for byte of output. ``decide`` looks at the votes
in so far and at how many more could still come, and says one of:

- ``Accept``: some vote has ``quorum`` or more workers behind it (the earliest to
  get there wins; with quorum > replicas / 2 there can be only one);
- ``Pending``: no vote has enough workers yet, but the replicas still running or
  still to be placed could make one;
- ``Disputed``: no vote can reach ``quorum`` any more and the votes differ;
- ``Short``: no vote can reach ``quorum`` and they do not differ: too few
  replicas ended at all (nodes failed, the attempt cap was hit).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

Key = tuple[str, Any, str, str]  # (ended, exit_code, stdout id, stderr id)


def vote_of(receipt_body: dict[str, Any]) -> Key:
    """What a verified receipt says the job produced."""
    b = receipt_body
    return (str(b["ended"]), b["exit_code"], str(b["stdout"]), str(b["stderr"]))


@dataclass(frozen=True)
class Vote:
    node: str
    key: Key


@dataclass(frozen=True)
class Accept:
    key: Key
    agreeing: tuple[str, ...]  # node ids, in the order their receipts came
    dissenting: tuple[str, ...]


@dataclass(frozen=True)
class Pending:
    pass


@dataclass(frozen=True)
class Disputed:
    groups: tuple[tuple[Key, tuple[str, ...]], ...]  # each vote and its workers, largest first


@dataclass(frozen=True)
class Short:
    votes: int


Decision = Accept | Pending | Disputed | Short


def groups(votes: Sequence[Vote]) -> dict[Key, list[str]]:
    """Workers by vote, in the order each vote first came (dicts keep insertion order)."""
    out: dict[Key, list[str]] = {}
    for v in votes:
        out.setdefault(v.key, []).append(v.node)
    return out


def decide(votes: Sequence[Vote], quorum: int, more_possible: int) -> Decision:
    """The decision on ``votes`` with up to ``more_possible`` further votes to come."""
    if quorum < 1:
        raise ValueError("quorum must be at least 1")
    g = groups(votes)
    for key, nodes in g.items():
        if len(nodes) >= quorum:
            dissent = tuple(v.node for v in votes if v.key != key)
            return Accept(key, tuple(nodes), dissent)
    best = max((len(n) for n in g.values()), default=0)
    if best + more_possible >= quorum:
        return Pending()
    if len(g) > 1:
        ordered = sorted(g.items(), key=lambda kv: -len(kv[1]))
        return Disputed(tuple((k, tuple(n)) for k, n in ordered))
    return Short(len(votes))


def check_params(replicas: int, quorum: int) -> str | None:
    """Why ``--replicas``/``--quorum`` cannot work together, or None."""
    if replicas < 1 or quorum < 1:
        return "--replicas and --quorum must be at least 1"
    if quorum > replicas:
        return f"--quorum={quorum} cannot exceed --replicas={replicas}"
    if quorum * 2 <= replicas:
        return (f"--quorum={quorum} of --replicas={replicas} is not a majority: two "
                "different outputs could both be accepted")
    return None
