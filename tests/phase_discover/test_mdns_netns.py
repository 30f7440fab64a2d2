"""mDNS across network namespaces joined by veth pairs (made and removed here).

Topology (unique names per run; nothing touches the host's interfaces):

    ns a (advertiser, 10.201.1.1) ==veth== ns b (browser, 10.201.1.2 + 10.201.2.2)
    ns c (forger,     10.201.2.1) ==veth== ns b

CI runs as root: there a missing ``ip netns`` is a failure, elsewhere a skip.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import script

PEER = str(Path(__file__).with_name("mdns_peer.py"))
ROOT = Path(__file__).resolve().parents[2]


def _netns_usable() -> str | None:
    if shutil.which("ip") is None:
        return "the ip tool (iproute2) is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"pdp{secrets.token_hex(3)}"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if r.returncode != 0:
        return f"ip netns add failed: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _sh(*args: str) -> None:
    subprocess.run(list(args), check=True, capture_output=True, timeout=20)


class Net:
    def __init__(self) -> None:
        self.tag = secrets.token_hex(3)
        self.ns = {n: f"pd{self.tag}{n}" for n in "abc"}
        self.made: list[str] = []

    def up(self) -> None:
        t = self.tag
        for ns in self.ns.values():
            _sh("ip", "netns", "add", ns)
            self.made.append(ns)
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
        for side, (ip_side, ip_b) in (("a", ("10.201.1.1", "10.201.1.2")),
                                      ("c", ("10.201.2.1", "10.201.2.2"))):
            v1, v2 = f"pd{t}{side}0", f"pd{t}{side}1"
            _sh("ip", "link", "add", v1, "type", "veth", "peer", "name", v2)
            _sh("ip", "link", "set", v1, "netns", self.ns[side])
            _sh("ip", "link", "set", v2, "netns", self.ns["b"])
            _sh("ip", "-n", self.ns[side], "addr", "add", f"{ip_side}/24", "dev", v1)
            _sh("ip", "-n", self.ns["b"], "addr", "add", f"{ip_b}/24", "dev", v2)
            _sh("ip", "-n", self.ns[side], "link", "set", v1, "up")
            _sh("ip", "-n", self.ns["b"], "link", "set", v2, "up")

    def down(self) -> None:
        for ns in self.made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)

    def run(self, ns: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.ns[ns], *args], capture_output=True,
                              text=True, timeout=timeout,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})

    def spawn(self, ns: str, *args: str) -> subprocess.Popen[str]:
        p = subprocess.Popen(["ip", "netns", "exec", self.ns[ns], *args], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        return p


@pytest.fixture
def net() -> Iterator[Net]:
    why = _netns_usable()
    if why is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"network namespaces are required in CI: {why}")
        pytest.skip(why)
    n = Net()
    try:
        n.up()
        yield n
    finally:
        n.down()
        left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert n.tag not in left


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
