"""The simulated dispatcher's pure decisions: one job's replica tally, and node choice.

Outputs are small ints standing for output content ids: ``RIGHT`` (0) is the true
output, ``COLLUDED`` (-1) the wrong output colluding liars agree on, and any
positive int a wrong output of its own (a liar acting alone; no two are equal).
No clock, no randomness of its own (the caller's ``random.Random`` is passed in).
"""

from __future__ import annotations

import random
from collections.abc import Container, Hashable

RIGHT = 0
COLLUDED = -1


class Tally:
    """The results of one job's replicas: accepted once ``k`` of them agree."""

    __slots__ = ("counts", "k", "results")

    def __init__(self, k: int) -> None:
        if k < 1:
            raise ValueError("quorum must be at least 1")
        self.k = k
        self.counts: dict[int, int] = {}
        self.results = 0

    def add(self, output: int) -> int | None:
        """Count one result; the output that reached ``k`` with it, else None."""
        c = self.counts.get(output, 0) + 1
        self.counts[output] = c
        self.results += 1
        return output if c >= self.k else None

    def best(self) -> int:
        """The size of the largest group of agreeing results."""
        return max(self.counts.values(), default=0)

    def short(self) -> int:
        """How many more agreeing results the largest group needs to reach ``k``."""
        return self.k - self.best()

    def disagreeing(self) -> bool:
        return len(self.counts) > 1


class FreePool:
    """Nodes with a free slot, by capability tier (a node of tier t serves jobs needing
    tier <= t). ``pick`` is uniform over the free nodes capable of a job, never one in
    ``exclude`` (the nodes this job already ran on, or any the caller bars)."""

    def __init__(self, tiers: int) -> None:
        self.lists: list[list[Hashable]] = [[] for _ in range(tiers)]
        self.where: dict[Hashable, tuple[int, int]] = {}

    def __len__(self) -> int:
        return len(self.where)

    def __contains__(self, node: object) -> bool:
        return node in self.where

    def add(self, node: Hashable, tier: int) -> None:
        if node in self.where:
            return
        lst = self.lists[tier]
        self.where[node] = (tier, len(lst))
        lst.append(node)

    def remove(self, node: Hashable) -> None:
        spot = self.where.pop(node, None)
        if spot is None:
            return
        tier, i = spot
        lst = self.lists[tier]
        last = lst.pop()
        if i < len(lst):  # move the last one into the hole
            lst[i] = last
            self.where[last] = (tier, i)

    def capable(self, min_tier: int) -> int:
        return sum(len(lst) for lst in self.lists[min_tier:])

    def pick(self, rng: random.Random, min_tier: int,
             exclude: Container[Hashable] = ()) -> Hashable | None:
        """A uniformly random free node of tier >= ``min_tier`` not in ``exclude``, or None."""
        lists = self.lists[min_tier:]
        total = sum(len(lst) for lst in lists)
        if total == 0:
            return None
        for _ in range(16):  # rejection: exclusions are a handful of nodes per job
            r = rng.randrange(total)
            for lst in lists:
                if r < len(lst):
                    node = lst[r]
                    break
                r -= len(lst)
            if node not in exclude:
                return node
        rest = [n for lst in lists for n in lst if n not in exclude]  # few free, most excluded
        return rng.choice(rest) if rest else None
