"""mDNS across network namespaces joined by veth pairs (made and removed here).

Topology (unique names per run; nothing touches the host's interfaces):

    ns a (advertiser, 10.201.1.1) ==veth== ns b (browser, 10.201.1.2 + 10.201.2.2)
    ns c (forger,     10.201.2.1) ==veth== ns b

CI runs as root: there a missing ``ip netns`` is a failure, elsewhere a skip.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import script
from tests.netns import Net

PEER = str(Path(__file__).with_name("mdns_peer.py"))


def _advertise(net: Net, ns: str, ip: str, *extra: str) -> tuple[subprocess.Popen[str], str]:
    p = net.spawn(ns, sys.executable, PEER, "advertise", f"--ip={ip}", *extra)
    assert p.stdout is not None
    line = p.stdout.readline()  # bounded: the process announces or dies
    if not line:
        p.kill()
        raise AssertionError(f"advertiser failed: {p.communicate(timeout=10)[1][-2000:]}")
    return p, json.loads(line)["ready"]


def _stop(p: subprocess.Popen[str]) -> None:
    try:
        p.communicate(input="", timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()


def test_discovery_across_veth_under_one_second(net: Net) -> None:
    adv, node_id = _advertise(net, "a", "10.201.1.1")
    try:
        r = net.run("b", sys.executable, PEER, "browse", "--ip=10.201.1.2", "--ip=10.201.2.2",
                    "--timeout=2")
        lines = [json.loads(x) for x in r.stdout.splitlines()]
        found = [x for x in lines if "found" in x]
        assert [x["found"] for x in found] == [node_id], r.stderr[-2000:]
        assert found[0]["elapsed_s"] < 1.0
        assert found[0]["addresses"] == ["10.201.1.1:4433"]
        # and through the CLI: one verified node record, exit 0
        t = f"pd{net.tag}a1"
        r = net.run("b", script("phase-discover"), "nodes", "--via=mdns", f"--interface={t}",
                    "--timeout=2", "--limit=1")
        assert r.returncode == 0, r.stderr[-2000:]
        recs = [json.loads(x) for x in r.stdout.splitlines()]
        assert [(x["type"], x["node_id"], x["source"]) for x in recs] == [
            ("node", node_id, "mdns")]
        assert recs[0]["envelope"]["body"]["node_id"] == node_id
    finally:
        _stop(adv)


def test_forged_record_from_third_namespace_is_not_reported(net: Net) -> None:
    good, good_id = _advertise(net, "a", "10.201.1.1")
    bad, bad_id = _advertise(net, "c", "10.201.2.1", "--forge")
    try:
        r = net.run("b", sys.executable, PEER, "browse", "--ip=10.201.1.2", "--ip=10.201.2.2",
                    "--timeout=2.5")
        lines = [json.loads(x) for x in r.stdout.splitlines()]
        assert [x["found"] for x in lines if "found" in x] == [good_id]
        stats = lines[-1]["stats"]
        assert stats.get("rejected_bad_signature", 0) >= 1, stats  # it was seen, and refused
        r = net.run("b", script("phase-discover"), "nodes", "--via=mdns",
                    f"--interface=pd{net.tag}a1", f"--interface=pd{net.tag}c1", "--timeout=2")
        ids = [json.loads(x)["node_id"] for x in r.stdout.splitlines()]
        assert ids == [good_id] and bad_id not in r.stdout
    finally:
        _stop(good)
        _stop(bad)
