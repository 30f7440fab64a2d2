"""The dispatch simulator (bench/dispatch) on small networks: its invariants, and its
shares of wrong and disputed results against the model, within statistical bounds.

Fixed seeds, so each run is the same every time; the bounds (4 standard errors of the
model's probability at the liar share the run actually gave liars) are what a correct
simulator meets for almost every seed, and a wrong quorum rule misses by far."""

from __future__ import annotations

from collections import Counter
from typing import Any

import model
import pytest
from engine import Dispatcher
from sim import main, summary
from world import Params

SMALL = {"nodes": 500, "jobs": 12_000, "liars": 0.2, "seed": 7}


def run(**kw: Any) -> tuple[Dispatcher, dict[str, Any]]:
    d = Dispatcher(Params(**{**SMALL, **kw}))
    placed: list[tuple[int, int]] = []
    place = d._place

    def spy(job: Any, node: Any, reason: str) -> None:
        placed.append((job.idx, node.idx))
        place(job, node, reason)

    d._place = spy  # type: ignore[method-assign]
    d.run()
    d.placed = placed  # type: ignore[attr-defined]
    return d, summary(d, 0.0)


@pytest.fixture(scope="module")
def colluding() -> tuple[Dispatcher, dict[str, Any]]:
    return run(replicas=3, quorum=2, collude=1.0)


def test_every_job_ends_once_and_no_node_runs_a_job_twice(
        colluding: tuple[Dispatcher, dict[str, Any]]) -> None:
    d, r = colluding
    assert sum(r["outcomes"].values()) == SMALL["jobs"] == len(d.jobs)
    assert all(j.done for j in d.jobs)
    per_job = Counter(d.placed)  # type: ignore[attr-defined]
    assert max(per_job.values()) == 1
    assert Counter(j for j, _ in per_job).most_common(1)[0][1] == 3  # no churn: 3 each


def test_colluders_win_as_often_as_the_model_says(
        colluding: tuple[Dispatcher, dict[str, Any]]) -> None:
    _, r = colluding
    assert abs(r["liar_share_of_runs"] - 0.2) < 0.03  # the picks follow the nodes
    wrong = r["outcomes"]["wrong"]
    assert abs(model.zscore(wrong, SMALL["jobs"], r["wrong_model_eff"])) < 4
    assert r["wrong"] < 0.6 * r["liar_share_of_runs"]  # 3p² - 2p³ at p = 0.2: 0.104
    assert r["disputed"] == 0


def test_lone_liars_are_never_accepted_and_disputes_match_the_model() -> None:
    _, r = run(replicas=3, quorum=2)
    assert r["outcomes"]["wrong"] == 0
    disputed = round(r["disputed"] * SMALL["jobs"])
    assert disputed > 500
    assert abs(model.zscore(disputed, SMALL["jobs"], r["disputed_model_eff"])) < 4


def test_one_replica_accepts_every_lie() -> None:
    d, r = run()
    assert r["execs_per_job"] == 1 and r["disputed"] == 0
    assert r["outcomes"]["wrong"] == d.liar_execs  # lie_rate 1: each liar's run is a lie


def test_launching_k_first_costs_less_and_accepts_the_same() -> None:
    _, r = run(replicas=3, quorum=2, collude=1.0, launch="quorum")
    assert abs(model.zscore(r["outcomes"]["wrong"], SMALL["jobs"], r["wrong_model_eff"])) < 4
    assert r["execs_per_job"] < 2.5
    assert abs(r["execs_per_job"] - r["execs_model"]) < 0.05


def test_churn_retries_elsewhere_and_loses_no_job() -> None:
    d, r = run(jobs=4000, session_s=900.0)
    assert d.deaths > 100 and r["extra"]["churn"] > 0.02
    failed = [j for j in d.jobs if j.outcome == "failed"]
    # only jobs far longer than the usual run fail: 8 nodes in a row left under them
    assert len(failed) < 0.005 * len(d.jobs)
    assert all(j.work > 600 and j.attempts == 8 for j in failed)
    assert abs(r["execs_per_job"] / r["execs_model"] - 1) < 0.15
    per_job = Counter(d.placed)  # type: ignore[attr-defined]
    assert max(per_job.values()) == 1


def test_disputes_settled_by_reexecution_always_end_right() -> None:
    _, r = run(jobs=4000, replicas=3, quorum=2, dispute="reexec")
    assert r["outcomes"]["wrong"] == r["outcomes"]["disputed"] == 0
    assert r["disputed"] > 0 and r["extra"]["dispute"] == pytest.approx(r["disputed"])


def test_same_seed_same_run() -> None:
    a = run(jobs=2000, replicas=3, quorum=2, session_s=1800.0)[1]
    b = run(jobs=2000, replicas=3, quorum=2, session_s=1800.0)[1]
    c = run(jobs=2000, replicas=3, quorum=2, session_s=1800.0, seed=8)[1]
    assert a == b and a != c


def test_bad_options_are_refused_with_the_usage_exit_code(
        capsys: pytest.CaptureFixture[str]) -> None:
    for argv, says in ((["--bogus=1"], "unknown option --bogus"),
                       (["--rows=custom", "--replicas=2", "--quorum=3"], "quorum <= replicas"),
                       (["--nodes=many"], "--nodes wants a int"),
                       (["--rows=99"], "--rows takes numbers"),
                       (["--rows=1,x"], "--rows takes row numbers"),
                       (["--rows=custom", "--dispute=vote"], "dispute is report"),
                       (["positional"], "unexpected argument")):
        assert main(argv) == 64
        err = capsys.readouterr().err
        assert says in err, err
