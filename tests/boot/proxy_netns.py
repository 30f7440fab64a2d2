"""The world of tests/boot/test_proxy_boot.py: a VM whose only reachable thing is a
SOCKS5 proxy, and nftables counting every frame the VM sends.

    VM (DHCP 10.77.0.x, default route and DNS server 10.77.0.1)
     └─ tap0 ── ns P: 10.77.0.1: udhcpd, microsocks :1080, the nftables counters
                 └─ veth ── ns W: 10.78.0.2: the boot provider (HTTP :8080)

ns P does not forward, so the VM reaches 10.77.0.1 only: a direct connection to the
provider, a DNS query or an mDNS packet would leave the VM on tap0 and be counted, but
go nowhere. ``provider.phase.test`` resolves only inside ns P (/etc/netns/<P>/hosts,
which ``ip netns exec`` mounts over /etc/hosts for microsocks), so a boot that works
proves the proxy resolved the name. Both namespaces are made by the test and deleted
afterwards (with the tap and veth devices in them); nothing touches the host's links.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.boot import vm

GW, PROXY_PORT = "10.77.0.1", 1080
WEB, WEB_PORT = "10.78.0.2", 8080
HOST = "provider.phase.test"
PROXY = f"socks5h://{GW}:{PROXY_PORT}"
PROVIDER = f"http://{HOST}:{WEB_PORT}"
ROOT = Path(__file__).resolve().parents[2]

# Every frame the VM sends enters ns P through tap0's ingress hook, before anything else
# sees it. Named counters (g_: "arp" alone is a keyword), first match wins; g_elsewhere
# takes the rest.
RULES = f"""
table netdev phaseguest {{
    counter g_arp {{ }}
    counter g_dhcp {{ }}
    counter g_to_proxy {{ }}
    counter g_ipv6 {{ }}
    counter g_dns {{ }}
    counter g_mdns {{ }}
    counter g_elsewhere {{ }}
    chain guest {{
        type filter hook ingress device "tap0" priority 0; policy accept;
        ether type arp counter name "g_arp" accept
        udp sport 68 udp dport 67 counter name "g_dhcp" accept
        ip daddr {GW} tcp dport {PROXY_PORT} counter name "g_to_proxy" accept
        ether type ip6 counter name "g_ipv6" accept
        meta l4proto {{ tcp, udp }} th dport 53 counter name "g_dns" accept
        udp dport 5353 counter name "g_mdns" accept
        counter name "g_elsewhere"
    }}
}}
"""


def missing() -> str | None:
    """What this machine lacks for the test, or None."""
    if os.geteuid() != 0 or not os.path.exists("/dev/net/tun") or shutil.which("ip") is None:
        return "root, /dev/net/tun and iproute2 (network namespaces with a tap device)"
    for tool, pkg in (("busybox", "busybox-static"), ("microsocks", "microsocks"),
                      ("nft", "nftables")):
        if shutil.which(tool) is None:
            return f"{tool} (Debian package {pkg})"
    return None


def sh(*args: str, stdin: str | None = None) -> str:
    r = subprocess.run(args, capture_output=True, text=True, input=stdin, timeout=30)
    if r.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed: {r.stderr.strip()}")
    return r.stdout


class World:
    def __init__(self, tmp: Path) -> None:
        tag = secrets.token_hex(3)
        self.ns, self.web_ns = f"pbp{tag}", f"pbw{tag}"
        self.tmp = tmp
        self.etc = Path("/etc/netns") / self.ns
        self.procs: list[subprocess.Popen[bytes]] = []
        self.made: list[str] = []

    def up(self, cas: Path, manifests: Path) -> None:
        ns, web = self.ns, self.web_ns
        for n in (ns, web):
            sh("ip", "netns", "add", n)
            self.made.append(n)
            sh("ip", "-n", n, "link", "set", "lo", "up")
        sh("ip", "-n", ns, "tuntap", "add", "dev", "tap0", "mode", "tap")
        sh("ip", "-n", ns, "addr", "add", f"{GW}/24", "dev", "tap0")
        sh("ip", "-n", ns, "link", "set", "tap0", "up")
        sh("ip", "-n", ns, "link", "add", "pw0", "type", "veth", "peer", "name", "pw1",
           "netns", web)
        sh("ip", "-n", ns, "addr", "add", "10.78.0.1/24", "dev", "pw0")
        sh("ip", "-n", web, "addr", "add", f"{WEB}/24", "dev", "pw1")
        sh("ip", "-n", ns, "link", "set", "pw0", "up")
        sh("ip", "-n", web, "link", "set", "pw1", "up")
        self.etc.mkdir(parents=True)
        (self.etc / "hosts").write_text(f"127.0.0.1 localhost\n{WEB} {HOST}\n")
        conf = self.tmp / "udhcpd.conf"
        conf.write_text(f"start 10.77.0.10\nend 10.77.0.20\ninterface tap0\n"
                        f"lease_file {self.tmp / 'leases'}\npidfile {self.tmp / 'udhcpd.pid'}\n"
                        f"option subnet 255.255.255.0\noption router {GW}\noption dns {GW}\n"
                        "option lease 600\n")
        (self.tmp / "leases").write_bytes(b"")
        self._spawn(ns, "busybox", "udhcpd", "-f", str(conf))
        self._spawn(ns, "microsocks", "-i", GW, "-p", str(PROXY_PORT))
        prov = self._spawn(web, sys.executable, "-m", "plasmd.provider", "serve",
                           f"--cas={cas}", f"--manifests={manifests}", f"--host={WEB}",
                           f"--port={WEB_PORT}", out=True)
        assert prov.stdout is not None
        line = prov.stdout.readline().decode()
        assert json.loads(line)["type"] == "provider", line
        self._wait_for_proxy()
        sh("ip", "netns", "exec", ns, "nft", "-f", "-", stdin=RULES)

    def _spawn(self, ns: str, *args: str, out: bool = False) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(["ip", "netns", "exec", ns, *args], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE if out else subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
        self.procs.append(p)
        return p

    def _wait_for_proxy(self) -> None:
        """microsocks listens, and reaches the provider by name (a real request through it)."""
        probe = ("import sys, time, urllib.error\n"
                 "from phase_core import proxy\n"
                 "for _ in range(100):\n"
                 "    try:\n"
                 f"        proxy.urlopener(proxy.parse({PROXY!r})).open({PROVIDER!r} + '/', "
                 "timeout=2)\n"
                 "        sys.exit(0)\n"
                 "    except urllib.error.HTTPError:\n"
                 "        sys.exit(0)\n"
                 "    except Exception as e:\n"
                 "        last = e\n"
                 "    time.sleep(0.1)\n"
                 "sys.exit(f'no provider through the proxy: {last}')\n")
        r = subprocess.run(["ip", "netns", "exec", self.ns, sys.executable, "-c", probe],
                           capture_output=True, text=True, timeout=60,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert r.returncode == 0, r.stderr

    def boot(self, built: Any, log: Path, append: str, until: str,
             timeout_s: float) -> vm.VMRun:
        return vm.run(log, kernel=built.kernel, initrd=built.initramfs, append=append,
                      net="tap0", wrap=["ip", "netns", "exec", self.ns], until=until,
                      timeout_s=timeout_s)

    def counters(self) -> dict[str, int]:
        out = sh("ip", "netns", "exec", self.ns, "nft", "-j", "list", "counters", "table",
                 "netdev", "phaseguest")
        return {c["counter"]["name"].removeprefix("g_"): c["counter"]["packets"]
                for c in json.loads(out)["nftables"] if "counter" in c}

    def down(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()
        for n in self.made:
            subprocess.run(["ip", "netns", "del", n], capture_output=True, timeout=30)
        shutil.rmtree(self.etc, ignore_errors=True)
