"""Test 3's plumbing: a network namespace with a tap device, a DHCP server (busybox
udhcpd), a boot provider announced on mDNS, and the VM attached to the tap.

QEMU's user network carries no multicast, hence the namespace. Everything is created
by the test and removed afterwards (``ip netns del`` takes the tap with it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.boot import vm

HOST_IP = "192.168.77.1"


def missing(info: dict[str, Any]) -> str | None:
    """What test 3 lacks on this machine, or None when it can run."""
    if os.geteuid() != 0 or not os.path.exists("/dev/net/tun") or shutil.which("ip") is None:
        return "root, /dev/net/tun and iproute2 (a network namespace with a tap device)"
    if shutil.which("busybox") is None:
        return "busybox (udhcpd in the namespace; Debian package busybox-static)"
    return None


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


def run(built: Any, tmp: Path, signer: Any) -> vm.VMRun:
    """Boot with phase.mode=local (mDNS only) and no provider on the command line."""
    ns = f"phboot{os.getpid() % 100000}"
    port = 8080
    procs: list[subprocess.Popen[bytes]] = []
    sh("ip", "netns", "add", ns)
    try:
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", ns, "tuntap", "add", "dev", "tap0", "mode", "tap")
        sh("ip", "-n", ns, "addr", "add", f"{HOST_IP}/24", "dev", "tap0")
        sh("ip", "-n", ns, "link", "set", "tap0", "up")
        conf = tmp / "udhcpd.conf"
        conf.write_text(f"start 192.168.77.10\nend 192.168.77.20\ninterface tap0\n"
                        f"lease_file {tmp / 'leases'}\npidfile {tmp / 'udhcpd.pid'}\n"
                        "option subnet 255.255.255.0\noption lease 600\n")
        (tmp / "leases").write_bytes(b"")
        procs.append(subprocess.Popen(["ip", "netns", "exec", ns, "busybox", "udhcpd", "-f",
                                       str(conf)], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
        signer(f"http://{HOST_IP}:{port}")
        helper = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "tests.boot.mdns_provider",
             str(tmp / "cas"), str(tmp / "manifests"), HOST_IP, str(port)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            cwd=Path(__file__).resolve().parents[2])
        procs.append(helper)
        assert helper.stdout is not None
        line = helper.stdout.readline().decode()
        assert line.startswith("ready"), "the mDNS boot provider did not start"
        time.sleep(0.5)
        return vm.run(tmp / "serial.log", kernel=built.kernel, initrd=built.initramfs,
                      append="phase.mode=local phase.rescue=poweroff phase.retries=2 "
                             "phase.discover_timeout=10",
                      net="tap0", wrap=["ip", "netns", "exec", ns],
                      until=r"PHASE-STAGE2-OK.*|PHASE-BOOT poweroff|Kernel panic",
                      timeout_s=180)
    finally:
        for p in procs:
            p.kill()
            p.wait()
        subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)
