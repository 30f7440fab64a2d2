"""The dispatcher's scheduler, sans I/O (plasmd.dispatchsched): placements, retries,
windows, replicas on distinct nodes, and bounded memory for a million jobs."""

from __future__ import annotations

import itertools
from typing import Any

from plasmd import dispatchsched as ds
from plasmd import quorum as q

A = ("exited", 0, "sha256:" + "a" * 64, "sha256:" + "e" * 64)
B = ("exited", 0, "sha256:" + "b" * 64, "sha256:" + "e" * 64)


def sched(nodes: int = 3, capacity: int = 4, **kw: Any) -> ds.Scheduler:
    s = ds.Scheduler(**kw)
    for i in range(nodes):
        s.add_node(f"n{i}", f"10.0.0.{i}", capacity=capacity)
    return s


def places(events: list[ds.Event]) -> list[tuple[int, str]]:
    return [(e.index, e.node) for e in events if isinstance(e, ds.Place)]


def test_one_job_one_node_accepted_then_retired() -> None:
    s = sched(1)
    s.add_job(0, "j0", {})
    [(i, n)] = places(s.placements(0))
    ev = s.on_result(i, n, A, 0.01, 1)
    assert isinstance(ev[0], ds.Accepted) and ev[0].decision.agreeing == ("n0",)
    assert isinstance(ev[1], ds.Retired) and s.live == 0


def test_replicas_go_to_distinct_nodes_and_a_liar_is_outvoted() -> None:
    s = sched(3, replicas=3, quorum=2)
    s.add_job(0, "j0", {})
    p = places(s.placements(0))
    assert sorted(n for _, n in p) == ["n0", "n1", "n2"]
    assert s.on_result(0, "n0", B, 0.01, 1) == []  # the liar answers first
    assert s.on_result(0, "n1", A, 0.01, 1) == []  # one each: the third decides
    ev = s.on_result(0, "n2", A, 0.01, 2)
    assert isinstance(ev[0], ds.Accepted)
    assert ev[0].decision == q.Accept(A, ("n1", "n2"), ("n0",))
    assert s.nodes["n0"].flagged == 1
    assert ev[1:] == [ds.Retired(0)] and s.live == 0


def test_a_late_replica_that_disagrees_after_acceptance_is_a_dissent() -> None:
    s = sched(3, replicas=3, quorum=2)
    s.add_job(0, "j0", {})
    s.placements(0)
    s.on_result(0, "n0", A, 0.01, 1)
    assert isinstance(s.on_result(0, "n1", A, 0.01, 1)[0], ds.Accepted)
    ev = s.on_result(0, "n2", B, 0.01, 2)
    assert ev == [ds.Dissent(0, "n2", B, A), ds.Retired(0)]
    assert s.nodes["n2"].flagged == 1


def test_a_node_fault_retries_elsewhere_never_on_the_same_node() -> None:
    s = sched(3)
    s.add_job(0, "j0", {})
    [(_, first)] = places(s.placements(0))
    assert s.on_failure(0, first, ds.NODE_FAULT, "unavailable", 1) == []
    [(_, second)] = places(s.placements(1))
    assert second != first
    s.on_failure(0, second, ds.NODE_FAULT, "timeout", 2)
    [(_, third)] = places(s.placements(2))
    assert third not in (first, second)
    # every node was tried: the job fails, it is not run twice anywhere
    ev = s.on_failure(0, third, ds.NODE_FAULT, "timeout", 3)
    assert isinstance(ev[0], ds.Failed) and ev[0].slug == "unavailable"
    assert "no node left" in ev[0].message
    assert [n for n, _ in ev[0].errors] == [first, second, third]
    assert places(s.placements(4)) == []


def test_retry_same_node_only_when_asked_and_no_other_is_left() -> None:
    s = sched(1, same_node_retry=True)
    s.add_job(0, "j0", {})
    [(_, n)] = places(s.placements(0))
    s.on_failure(0, n, ds.NODE_FAULT, "timeout", 1)
    assert places(s.placements(1)) == [(0, "n0")]


def test_queue_full_is_not_a_run_the_node_may_get_the_job_again() -> None:
    s = sched(1, capacity=8)
    s.add_job(0, "j0", {})
    s.placements(0)
    w = s.nodes["n0"].window
    assert s.on_failure(0, "n0", ds.BUSY, "queue_full", 1) == []
    assert s.nodes["n0"].window == max(1.0, w / 2)  # it backs off
    assert places(s.placements(1)) == [(0, "n0")]


def test_a_bad_job_fails_at_once_without_retries() -> None:
    s = sched(3)
    s.add_job(0, "j0", {})
    [(_, n)] = places(s.placements(0))
    ev = s.on_failure(0, n, ds.JOB_BAD, "invalid_request", 1)
    assert isinstance(ev[0], ds.Failed) and ev[0].slug == "invalid_request"
    assert places(s.placements(1)) == []


def test_the_attempt_cap_bounds_retries() -> None:
    s = sched(10, max_attempts=2)
    s.add_job(0, "j0", {})
    [(_, n)] = places(s.placements(0))
    assert s.on_failure(0, n, ds.NODE_FAULT, "timeout", 0) == []
    [(_, n)] = places(s.placements(1))
    ev = s.on_failure(0, n, ds.NODE_FAULT, "timeout", 1)
    assert isinstance(ev[0], ds.Failed) and "2 attempts" in ev[0].message


def test_a_node_that_fails_twice_is_down_for_a_while() -> None:
    s = sched(2, capacity=1)
    s.add_job(0, "j0", {})
    s.add_job(1, "j1", {})
    p = dict((n, i) for i, n in places(s.placements(0)))
    s.on_failure(p["n0"], "n0", ds.NODE_FAULT, "unavailable", 1)
    s.add_job(2, "j2", {})
    p = dict((n, i) for i, n in places(s.placements(1)))
    assert s.nodes["n0"].down_until == 0  # one fault: still up
    s.on_failure(p["n0"], "n0", ds.NODE_FAULT, "unavailable", 1)
    assert s.nodes["n0"].down_until == 1 + ds.DOWN_FOR_S
    s.add_job(3, "j3", {})
    assert all(n != "n0" for _, n in places(s.placements(2)))


def test_windows_bound_jobs_in_flight_per_node() -> None:
    s = sched(2, capacity=4)
    for i in range(50):
        s.add_job(i, f"j{i}", {})
    p = places(s.placements(0))
    per = {n: sum(1 for _, x in p if x == n) for n in ("n0", "n1")}
    assert all(0 < c <= 4 for c in per.values())
    assert all(s.nodes[n].in_flight <= s.nodes[n].window for n in per)


def test_the_window_grows_while_latency_stays_flat_and_shrinks_on_timeouts() -> None:
    s = sched(1, capacity=32)
    n = s.nodes["n0"]
    start = n.window
    for i in itertools.count():
        s.add_job(i, f"j{i}", {})
        for idx, node in places(s.placements(i)):
            s.on_result(idx, node, A, 0.010, i)
        if i > 400:
            break
    assert n.window > start
    s.add_job(10_000, "jx", {})
    [(idx, node)] = places(s.placements(0))
    before = n.window
    s.on_failure(idx, node, ds.NODE_FAULT, "timeout", 1)
    assert n.window == max(1.0, before / 2)


def test_distinct_addresses_keeps_replicas_on_distinct_hosts() -> None:
    s = ds.Scheduler(replicas=3, quorum=2, distinct_hosts=True)
    for i, host in enumerate(["127.0.0.1", "127.0.0.1", "::1", "10.0.0.9"]):
        s.add_node(f"n{i}", host)
    s.add_job(0, "j0", {})
    p = places(s.placements(0))
    hosts = [s.nodes[n].host for _, n in p]
    assert len(p) == 3 and len(set(hosts)) == 3


def test_distinct_addresses_compare_ipv6_by_its_64_and_mapped_ipv4_as_ipv4() -> None:
    assert ds.site_of("2001:db8:1:2::10") == ds.site_of("2001:db8:1:2:ffff::1")
    assert ds.site_of("[2001:db8:1:2::10]") == "2001:db8:1:2::/64"
    assert ds.site_of("2001:db8:1:3::10") != ds.site_of("2001:db8:1:2::10")
    assert ds.site_of("::ffff:10.0.0.9") == ds.site_of("10.0.0.9") == "10.0.0.9"
    assert ds.site_of("10.0.0.9") != ds.site_of("10.0.0.10")  # IPv4 whole: a LAN's hosts
    assert ds.site_of("Worker.Example.ORG") == "worker.example.org"
    # a Sybil with many addresses in one /64 fills one replica slot
    s = ds.Scheduler(replicas=3, quorum=2, distinct_hosts=True)
    for i in range(5):
        s.add_node(f"v6-{i}", f"2001:db8:1:2::{i + 1}")
    s.add_node("a", "10.0.0.1")
    s.add_node("b", "10.0.0.2")
    s.add_job(0, "j0", {})
    placed = [n for _, n in places(s.placements(0))]
    assert len(placed) == 3 and sum(n.startswith("v6-") for n in placed) == 1


def test_distinct_addresses_with_one_host_cannot_reach_the_quorum() -> None:
    s = ds.Scheduler(replicas=3, quorum=2, distinct_hosts=True)
    for i in range(4):
        s.add_node(f"n{i}", "127.0.0.1")
    s.add_job(0, "j0", {})
    [(_, n)] = places(s.placements(0))
    ev = s.on_result(0, n, A, 0.01, 1)
    assert isinstance(ev[0], ds.Failed) and ev[0].slug == "no_quorum"


def test_flagged_nodes_are_used_last_and_avoided_past_the_limit() -> None:
    s = ds.Scheduler(avoid_flagged=3)
    s.add_node("clean", "h1", capacity=1)
    s.add_node("once", "h2", capacity=1, flagged=1)
    s.add_node("liar", "h3", capacity=1, flagged=3)
    for i in range(3):
        s.add_job(i, f"j{i}", {})
    assert places(s.placements(0)) == [(0, "clean"), (1, "once")]


def test_a_job_fails_clearly_when_every_node_is_avoided() -> None:
    s = ds.Scheduler(avoid_flagged=1)
    s.add_node("liar", "h1", flagged=1)
    s.add_job(0, "j0", {})
    ev = s.placements(0)
    assert isinstance(ev[0], ds.Failed) and "--avoid-after" in ev[0].message
    assert ev[1:] == [ds.Retired(0)]


def test_requirements_are_matched_against_capabilities() -> None:
    s = ds.Scheduler(fits=lambda req, caps: caps is not None and caps["arch"] == req["arch"])
    s.add_node("x86", "h1", caps={"arch": "x86_64"})
    s.add_node("arm", "h2", caps={"arch": "aarch64"})
    s.add_job(0, "j0", {"arch": "aarch64"})
    assert places(s.placements(0)) == [(0, "arm")]


def test_jobs_wait_for_discovery_and_fail_once_it_ends_with_no_node() -> None:
    s = ds.Scheduler()
    s.discovering = True
    s.add_job(0, "j0", {})
    assert s.placements(0) == []
    s.discovering = False
    ev = s.placements(1)
    assert isinstance(ev[0], ds.Failed) and ev[0].slug == "unavailable"


def test_a_million_jobs_through_the_scheduler_hold_a_bounded_number() -> None:
    """Backpressure: the caller reads a job only when ``wants_input``; with every
    job answered as soon as it is placed, no more than ``max_pending`` are ever live."""
    s = sched(8, capacity=16, max_pending=64)
    n_jobs, read, done, most = 1_000_000, 0, 0, 0
    source = iter(range(n_jobs))
    inflight: list[tuple[int, str]] = []
    while done < n_jobs:
        while s.wants_input():
            i = next(source, None)
            if i is None:
                break
            read += 1
            s.add_job(i, "j", {})
        most = max(most, s.live, read - done)
        inflight += places(s.placements(0))
        for i, n in inflight:
            for ev in s.on_result(i, n, A, 0.01, 0):
                done += isinstance(ev, ds.Retired)
        inflight.clear()
    assert read == done == n_jobs
    assert most <= 64
    assert not s.tasks and not s.ready
