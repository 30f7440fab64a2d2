"""Quorum arithmetic (plasmd.quorum): when K of N receipts agree, and when not."""

from __future__ import annotations

import pytest

from plasmd import quorum as q

A = ("exited", 0, "sha256:" + "a" * 64, "sha256:" + "e" * 64)
B = ("exited", 0, "sha256:" + "b" * 64, "sha256:" + "e" * 64)
C = ("exited", 1, "sha256:" + "a" * 64, "sha256:" + "e" * 64)  # same bytes, other exit


def votes(*pairs: tuple[str, q.Key]) -> list[q.Vote]:
    return [q.Vote(n, k) for n, k in pairs]


def test_two_of_three_agreeing_accept_and_name_the_dissenter() -> None:
    d = q.decide(votes(("n1", A), ("liar", B), ("n2", A)), 2, 0)
    assert d == q.Accept(A, ("n1", "n2"), ("liar",))


def test_accepts_as_soon_as_the_quorum_is_there_while_one_still_runs() -> None:
    assert q.decide(votes(("n1", A), ("n2", A)), 2, 1) == q.Accept(A, ("n1", "n2"), ())


def test_pending_while_a_running_replica_could_still_make_the_quorum() -> None:
    assert q.decide(votes(("n1", A), ("n2", B)), 2, 1) == q.Pending()
    assert q.decide([], 2, 3) == q.Pending()


def test_disputed_when_no_output_can_reach_the_quorum() -> None:
    d = q.decide(votes(("n1", A), ("n2", B), ("n3", C)), 2, 0)
    assert isinstance(d, q.Disputed)
    assert {k for k, _ in d.groups} == {A, B, C}
    assert sorted(n for _, ns in d.groups for n in ns) == ["n1", "n2", "n3"]


def test_the_exit_code_is_part_of_the_vote() -> None:
    assert isinstance(q.decide(votes(("n1", A), ("n2", C)), 2, 0), q.Disputed)


def test_short_when_too_few_replicas_ended_and_they_agree() -> None:
    assert q.decide(votes(("n1", A)), 2, 0) == q.Short(1)
    assert q.decide([], 1, 0) == q.Short(0)


def test_the_largest_group_comes_first_in_a_dispute() -> None:
    d = q.decide(votes(("n1", B), ("n2", A), ("n3", A), ("n4", C)), 3, 0)
    assert isinstance(d, q.Disputed) and d.groups[0] == (A, ("n2", "n3"))


@pytest.mark.parametrize(("n", "k", "ok"), [(1, 1, True), (3, 2, True), (5, 3, True),
                                            (3, 1, False), (4, 2, False), (2, 3, False),
                                            (0, 0, False)])
def test_only_a_majority_quorum_is_allowed(n: int, k: int, ok: bool) -> None:
    assert (q.check_params(n, k) is None) is ok


def test_vote_of_a_receipt_body() -> None:
    body = {"ended": "exited", "exit_code": 0, "stdout": A[2], "stderr": A[3], "x": 1}
    assert q.vote_of(body) == A
