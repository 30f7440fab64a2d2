"""The simulator (bench/discovery/simnet.py) at 2,000 nodes: the issue's goals, on counts."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench" / "discovery"))
import simnet

N = 2000


@pytest.fixture(scope="module")
def base() -> tuple[simnet.Sim, list[str]]:
    return simnet.built(N, seed=11, publishers=300)


@pytest.mark.slow
def test_ten_percent_churn(base: tuple[simnet.Sim, list[str]]) -> None:
    r = simnet.scenario(base, churn=0.10, lookups=300, seed=12)
    assert r["success"] >= 0.99
    assert r["hops_median"] <= math.log2(N) / 2
    assert r["forged_accepted"] == 0


@pytest.mark.slow
def test_ten_percent_liars_never_get_a_forgery_accepted(
        base: tuple[simnet.Sim, list[str]]) -> None:
    r = simnet.scenario(base, churn=0.10, liars=0.10, lookups=200, seed=13)
    assert r["forged_rejected"] > 0  # the liars did try
    assert r["forged_accepted"] == 0
    assert r["success"] >= 0.97
    assert r["hops_median"] <= math.log2(N) / 2
