"""Private mode over a proxy, proven on the wire: phase-fetch and phase-discover (HTTP
provider) in a network namespace that reaches the world only through a SOCKS5 proxy,
with nftables counting every packet the client namespace sends.

    ns a (client, 10.201.1.1) ==veth== ns b (microsocks on 10.201.1.2:1080)
                                       ns b (10.201.2.2) ==veth== ns c (HTTP, 10.201.2.1)

The client's default route points at ns b, so a direct connection or a DNS query
would leave ns a and be counted (the control below shows the counter sees them); ns b
does not forward. ``mirror.phase.test`` resolves only in ns b (/etc/netns/<b>/hosts,
which ``ip netns exec`` mounts over /etc/hosts), so a fetch that works proves the
proxy resolved the name. The assertion: after the tools ran, every packet from ns a
went to 10.201.1.2:1080, and none to port 53.

The kernel's own IPv6 housekeeping on a link that has just come up (duplicate address
detection, router solicitations, MLD reports: ICMPv6 from a link-local or unspecified
address to ff02::/16, for several seconds after the link is up) is counted apart as
``link``: it is not sent by the tools, and on a slow run it lands inside the measured
window.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import script
from tests.netns import Net
from tests.phase_discover.test_boot import SIGNER, manifest
from tests.phase_fetch.conftest import blob
from tests.socks_hostile import microsocks_or_skip

PROXY = "socks5h://10.201.1.2:1080"
HOST = "mirror.phase.test"
PORT = 8080
RULES = """
define link_icmpv6 = { nd-router-solicit, nd-neighbor-solicit, mld-listener-report,
                       mld2-listener-report }
table inet phaseprobe {
    counter to_proxy { }
    counter dns { }
    counter elsewhere { }
    counter link { }
    chain out {
        type filter hook output priority 0; policy accept;
        ip daddr 10.201.1.2 tcp dport 1080 counter name "to_proxy" accept
        ip6 saddr { ::, fe80::/10 } ip6 daddr ff02::/16 icmpv6 type $link_icmpv6 \\
            counter name "link" accept
        meta l4proto { tcp, udp } th dport 53 counter name "dns"
        counter name "elsewhere"
    }
}
"""


def _nft_or_skip() -> str:
    import os

    path = shutil.which("nft")
    if path is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("nft (nftables) is required in CI for the proxy test")
        pytest.skip("nft (nftables) is not installed")
    return path


def counters(net: Net) -> dict[str, int]:
    r = net.run("a", "nft", "-j", "list", "counters", "table", "inet", "phaseprobe")
    assert r.returncode == 0, r.stderr
    out = {}
    for item in json.loads(r.stdout)["nftables"]:
        c = item.get("counter")
        if c:
            out[c["name"]] = c["packets"]
    return out


@pytest.fixture
def world(net: Net, tmp_path: Path) -> Iterator[dict[str, str]]:
    exe, nft = microsocks_or_skip(), _nft_or_skip()
    etc = Path("/etc/netns") / net.ns["b"]
    etc.mkdir(parents=True)
    procs: list[subprocess.Popen[str]] = []
    try:
        (etc / "hosts").write_text(f"127.0.0.1 localhost\n10.201.2.1 {HOST}\n")
        # the web root: one blob and one signed boot manifest
        root = tmp_path / "www"
        data = blob(300_000, seed=3)
        cid = "sha256:" + hashlib.sha256(data).hexdigest()
        (root / "sha256").mkdir(parents=True)
        (root / "sha256" / cid[7:]).write_bytes(data)
        (root / "stable" / "x86_64").mkdir(parents=True)
        (root / "stable" / "x86_64" / "manifest.json").write_text(json.dumps(manifest()))
        web = net.spawn("c", sys.executable, "-u", "-m", "http.server", "--bind", "10.201.2.1",
                        "--directory", str(root), str(PORT))
        procs.append(web)
        assert web.stdout is not None and "Serving HTTP" in web.stdout.readline()
        socks = net.spawn("b", exe, "-i", "10.201.1.2", "-p", "1080")
        procs.append(socks)
        net.run("a", "ip", "route", "add", "default", "via", "10.201.1.2")
        ready = net.run("a", sys.executable, "-c", _WAIT_PROXY)
        assert ready.returncode == 0, ready.stderr
        r = net.run("a", nft, "-f", "-", input_text=RULES)
        assert r.returncode == 0, r.stderr
        yield {"cid": cid, "size": str(len(data)), "cas": str(tmp_path / "cas")}
    finally:
        for p in procs:
            p.kill()
            p.communicate()
        shutil.rmtree(etc, ignore_errors=True)


_WAIT_PROXY = """
import socket, time
for _ in range(200):
    try:
        socket.create_connection(("10.201.1.2", 1080), timeout=1).close()
        break
    except OSError:
        time.sleep(0.05)
else:
    raise SystemExit("microsocks did not start")
"""


def test_fetch_and_discover_through_the_proxy_and_nothing_else(net: Net,
                                                                world: dict[str, str]) -> None:
    # the control: without the proxy, a direct fetch leaves ns a and is counted (and fails)
    r = net.run("a", script("phase-fetch"), "get", world["cid"], "--retries=0",
                "--connect-timeout=1", f"--cas={world['cas']}",
                f"--mirror=http://10.201.2.1:{PORT}")
    assert r.returncode != 0
    # ... and so does a local lookup of the name (a DNS query)
    net.run("a", sys.executable, "-c", f"import socket\ntry: socket.getaddrinfo({HOST!r}, 80)\n"
            "except OSError: pass", env={"RES_OPTIONS": "timeout:1 attempts:1"})
    seen = counters(net)
    assert seen["elsewhere"] > 0 and seen["dns"] > 0, seen
    net.run("a", "nft", "reset", "counters", "table", "inet", "phaseprobe")
    assert {k: v for k, v in counters(net).items() if k != "link"} == {
        "to_proxy": 0, "dns": 0, "elsewhere": 0}

    r = net.run("a", script("phase-fetch"), "get", world["cid"], f"--size={world['size']}",
                f"--cas={world['cas']}", f"--mirror=http://{HOST}:{PORT}", f"--proxy={PROXY}")
    assert r.returncode == 0, r.stderr[-2000:]
    [rec] = [json.loads(x) for x in r.stdout.splitlines()]
    assert rec["type"] == "blob" and rec["id"] == world["cid"]
    assert rec["source"] == f"http://{HOST}:{PORT}"

    r = net.run("a", script("phase-discover"), "boot", "--channel=stable", "--arch=x86_64",
                f"--provider=http://{HOST}:{PORT}", "--timeout=10", "--limit=1",
                env={"PHASE_PROXY": PROXY})
    assert r.returncode == 0, r.stderr[-2000:]
    [rec] = [json.loads(x) for x in r.stdout.splitlines()]
    assert rec["type"] == "boot" and rec["signers"] == [SIGNER.node_id]

    seen = counters(net)
    assert seen["to_proxy"] > 0
    assert seen["dns"] == 0, "a DNS query left the client namespace"
    assert seen["elsewhere"] == 0, "a packet went somewhere other than the proxy"
