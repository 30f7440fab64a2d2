"""The closed-form model against the formulas docs/dispatch-sim.md states."""

from __future__ import annotations

import math

import model
import pytest


@pytest.mark.parametrize("p", [0.01, 0.05, 0.2])
def test_one_replica_accepts_a_lie_with_the_liar_share(p: float) -> None:
    m = model.outcome(p, 1, 1)
    assert m["wrong"] == pytest.approx(p) and m["disputed"] == 0 and m["results"] == 1


@pytest.mark.parametrize("p", [0.01, 0.05, 0.2])
def test_three_of_two_colluding_is_the_binomial_tail(p: float) -> None:
    m = model.outcome(p, 3, 2, collude=1.0)
    assert m["wrong"] == pytest.approx(3 * p**2 - 2 * p**3)
    assert m["disputed"] == 0  # two outputs only: one of them has two of three results


@pytest.mark.parametrize("p", [0.01, 0.05, 0.2])
def test_three_of_two_alone_never_accepts_a_lie_and_disputes_instead(p: float) -> None:
    m = model.outcome(p, 3, 2)
    assert m["wrong"] == 0
    assert m["disputed"] == pytest.approx(3 * p**2 - 2 * p**3)
    assert m["unresolved"] == pytest.approx(m["disputed"])


def test_binomial_tail_for_larger_quorums() -> None:
    p, n, k = 0.1, 5, 3
    tail = sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))
    assert model.outcome(p, n, k, collude=1.0)["wrong"] == pytest.approx(tail)


def test_lie_rate_and_partial_collusion_scale_the_per_result_probabilities() -> None:
    b = 0.2 * 0.5 * 0.25  # p * lie_rate * collude
    m = model.outcome(0.2, 3, 2, lie_rate=0.5, collude=0.25)
    assert m["wrong"] == pytest.approx(3 * b**2 - 2 * b**3)


def test_settling_disputes() -> None:
    p = 0.05
    rep = model.outcome(p, 3, 2, dispute="reexec")
    assert rep["unresolved"] == 0 and rep["disputed"] == pytest.approx(3 * p**2 - 2 * p**3)
    ext = model.outcome(p, 3, 2, dispute="extend", cap=8)
    assert ext["wrong"] == 0 and ext["unresolved"] < 1e-6  # more replicas resolve it
    assert ext["results"] > 3


def test_drawing_one_at_a_time_costs_k_plus_what_disagreement_adds() -> None:
    p = 0.05
    alone = model.outcome(p, 3, 2)  # a third result only when the first two differ
    assert alone["draws"] == pytest.approx(2 + (1 - (1 - p) ** 2))
    both = model.outcome(p, 3, 2, collude=1.0)  # two colluders agree with each other
    assert both["draws"] == pytest.approx(2 + (1 - (1 - p) ** 2 - p**2))


def test_churn_loss_is_small_for_short_jobs_and_near_one_for_long() -> None:
    assert model.lost_per_attempt(0, 60, 1) == 0
    short = model.lost_per_attempt(3600, 60, 0.01)
    assert short == pytest.approx(1 - math.exp(-60 / 3600), rel=1e-3)
    assert model.lost_per_attempt(60, 36000, 0.01) > 0.99


def test_wilson_and_z() -> None:
    lo, hi = model.wilson(50, 1000)
    assert lo < 0.05 < hi and hi - lo < 0.03
    assert model.wilson(0, 100)[0] == 0
    assert abs(model.zscore(50, 1000, 0.05)) < 1e-9
    assert model.zscore(80, 1000, 0.05) > 4
    assert model.zscore(0, 1000, 0.0) == 0 and model.zscore(1, 1000, 0.0) == math.inf


def test_bad_quorum_is_refused() -> None:
    with pytest.raises(ValueError, match="quorum"):
        model.outcome(0.05, 2, 3)
