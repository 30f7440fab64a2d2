"""plasmd under a sandbox that refuses netlink sockets (systemd's
``RestrictAddressFamilies=`` without AF_NETLINK): it cannot list its interfaces, so
it starts with no addresses in its record, says why, and still runs jobs."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT
from tests.plasmd.conftest import prepare_home, start_node, submit

PREFIX = (sys.executable, "-m", "tests.plasmd.nonetlink")


def test_sandbox_helper_really_refuses_netlink():
    probe = "import socket; socket.socket(16, socket.SOCK_RAW)"
    r = subprocess.run([*PREFIX, sys.executable, "-c", probe], capture_output=True,
                       text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 1 and "Errno 97" in r.stderr, r.stderr


def test_node_without_netlink_starts_and_runs_jobs(tmp_path):
    # mdns off: if the sandbox failed to apply, nothing may go out on real interfaces.
    prepare_home(tmp_path / "node", listen=("0.0.0.0:0",), mdns=False, open=True)
    node = start_node(tmp_path / "node", init=False, prefix=PREFIX)
    try:
        assert node.started["addresses"] == []
        warn = [x for x in node.logs() if x.get("event") == "node.addresses_unknown"]
        assert warn and warn[0]["error"] == "unavailable"
        assert "netlink" in str(warn[0]["hint"])
        r = submit(tmp_path / "client", f"{node.node_id}@127.0.0.1:{node.port}",
                   stdin=b"Hello, World", tmp=tmp_path)
        assert r.returncode == 0, r.stderr.decode()[-2000:]
        assert r.stdout == b"dlroW ,olleH"
    finally:
        assert node.stop() == 0
