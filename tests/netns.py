"""Network namespaces joined by veth pairs, made and removed by the tests that use them.

Topology (unique names per run; nothing touches the host's interfaces):

    ns a (10.201.1.1) ==veth== ns b (10.201.1.2 + 10.201.2.2) ==veth== ns c (10.201.2.1)

CI runs as root: there a missing ``ip netns`` is a failure, elsewhere a skip.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


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

    def run(self, ns: str, *args: str, timeout: float = 30, input_text: str | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.ns[ns], *args], capture_output=True,
                              text=True, timeout=timeout, input=input_text,
                              env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})

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
