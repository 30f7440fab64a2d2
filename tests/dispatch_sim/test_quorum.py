"""The simulated dispatcher's pure decisions: the replica tally and the node choice."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from quorum import COLLUDED, RIGHT, FreePool, Tally


def test_tally_accepts_the_first_output_k_results_agree_on() -> None:
    t = Tally(2)
    assert t.add(RIGHT) is None
    assert t.add(7) is None  # a liar of its own: no quorum yet
    assert t.best() == 1 and t.short() == 1 and t.disagreeing()
    assert t.add(RIGHT) == RIGHT
    assert t.results == 3


def test_colluders_reaching_k_first_win() -> None:
    t = Tally(2)
    assert t.add(COLLUDED) is None
    assert t.add(RIGHT) is None
    assert t.add(COLLUDED) == COLLUDED


def test_distinct_wrong_outputs_never_make_a_quorum() -> None:
    t = Tally(2)
    for out in (1, 2, 3, 4):
        assert t.add(out) is None
    assert t.short() == 1


def test_quorum_of_one_takes_the_first_result() -> None:
    assert Tally(1).add(5) == 5
    with pytest.raises(ValueError, match="quorum"):
        Tally(0)


def test_pool_add_remove_keep_positions_consistent() -> None:
    pool = FreePool(2)
    for n in range(6):
        pool.add(n, n % 2)
    pool.add(3, 1)  # already in: no duplicate
    assert len(pool) == 6
    for n in (0, 5, 2):
        pool.remove(n)
    pool.remove(99)  # not there: nothing happens
    assert sorted(n for lst in pool.lists for n in lst) == [1, 3, 4]
    for n in (1, 3, 4):
        tier, i = pool.where[n]
        assert pool.lists[tier][i] == n


def test_pick_respects_capability_and_exclusions() -> None:
    pool = FreePool(3)
    for n in range(30):
        pool.add(n, n % 3)
    rng = random.Random(1)
    for _ in range(300):
        got = pool.pick(rng, 2, exclude={2, 5})
        assert got is not None and got % 3 == 2 and got not in (2, 5)
    assert pool.pick(rng, 2, exclude=set(range(30))) is None
    assert FreePool(1).pick(rng, 0) is None


def test_pick_is_uniform_over_the_capable() -> None:
    pool = FreePool(3)
    for n in range(9):
        pool.add(n, n % 3)
    rng = random.Random(2)
    counts = Counter(pool.pick(rng, 1) for _ in range(6000))
    assert set(counts) == {1, 2, 4, 5, 7, 8}  # tiers 1 and 2 only
    assert all(850 < c < 1150 for c in counts.values())  # 1000 each, about 4 sigma


def test_pick_falls_back_when_nearly_everything_is_excluded() -> None:
    pool = FreePool(1)
    for n in range(200):
        pool.add(n, 0)
    rng = random.Random(3)
    excluded = set(range(199))  # rejection sampling alone would rarely find 199
    assert all(pool.pick(rng, 0, excluded) == 199 for _ in range(20))
