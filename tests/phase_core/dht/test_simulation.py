"""The simulator (bench/discovery/simnet.py) at 2,000 nodes: the goals of docs/discovery.md
on counts and virtual time (the simulator's clock, not the wall clock)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench" / "discovery"))
import eclipse
import simnet

N = 2000


@pytest.fixture(scope="module")
def base() -> tuple[simnet.Sim, list[str]]:
    return simnet.built(N, seed=11, publishers=100, sampled=True)


@pytest.fixture(scope="module")
def honest(base: tuple[simnet.Sim, list[str]]) -> dict[str, Any]:
    r = simnet.scenario(base, lookups=150, seed=12)
    assert r["success"] >= 0.995 and r["forged_accepted"] == 0
    return r


@pytest.mark.slow
def test_ten_percent_liars_cost_at_most_twice_the_honest_time_and_messages(
        base: tuple[simnet.Sim, list[str]], honest: dict[str, Any]) -> None:
    r = simnet.scenario(base, liars=0.10, lookups=150, seed=13)
    assert r["forged_rejected"] > 0  # the liars did try
    assert r["forged_accepted"] == 0
    assert r["success"] >= 0.995
    assert r["time_median_s"] <= 2 * honest["time_median_s"]
    assert r["messages_mean"] <= 2 * honest["messages_mean"]


@pytest.mark.slow
def test_twenty_percent_liars_and_ten_percent_liars_with_churn(
        base: tuple[simnet.Sim, list[str]]) -> None:
    r = simnet.scenario(base, liars=0.20, lookups=150, seed=14)
    assert r["success"] >= 0.995 and r["forged_accepted"] == 0
    r = simnet.scenario(base, churn=0.30, liars=0.10, lookups=150, seed=15)
    assert r["success"] >= 0.99 and r["forged_accepted"] == 0


@pytest.mark.slow
def test_records_outlive_their_first_holders_by_replication() -> None:
    """Half the network churns between publish and lookup, then every node that held a
    record at publish time dies too: only copies pushed to newcomers are left."""
    on = simnet.built(600, seed=21, publishers=60, sampled=True)
    r = simnet.scenario(on, churn=0.50, kill_holders=True, lookups=100, seed=22)
    assert r["success"] >= 0.99
    off = simnet.built(600, seed=21, publishers=60, sampled=True, replicate=False)
    r = simnet.scenario(off, churn=0.50, kill_holders=True, lookups=100, seed=22)
    assert r["success"] <= 0.2


@pytest.mark.slow
def test_an_eclipse_by_one_percent_sybils_from_few_subnets_is_defeated() -> None:
    """Sybils ground around a key before its record is published: without subnet limits
    they are its k closest and swallow it; with them, honest nodes hold it too."""
    rows = {r["setting"]: r for r in eclipse.run(2000, 60, 0.01, 2, settings=("before",
                                                                               "after"))}
    assert rows["before"]["captured"] >= 0.9
    assert rows["after"]["captured"] <= 0.02
