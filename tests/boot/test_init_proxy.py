"""boot/init over a proxy (phase.proxy, phase.tor), in plain sh with stub tools (no QEMU).

What a boot cannot show here: tor bootstrapping needs the real Tor network, which tests
cannot reach. So a stub `tor` stands in: it records its arguments, "opens" its SOCKS
port (a line in a stand-in for /proc/net/tcp) and writes tor's "Bootstrapped 100%" line
to the log file it was given, and the test checks that /init started it as the proxy
and pointed phase-discover and phase-fetch at it. The proxy path itself (every request
through SOCKS5, nothing else on the wire) is proven against a real proxy in
tests/phase_fetch/test_proxy_netns.py, and for a whole QEMU boot, with the image's real
tor failing to reach the Tor network, in tests/boot/test_proxy_boot.py.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.boot.test_init_branches import CHAIN, LIB, Sandbox, sb  # noqa: F401 - a fixture

BASE = "console=ttyS0 phase.rescue=poweroff phase.retries=2 phase.mode=private"
PROVIDER = "phase.provider=http://provider.example:8080"

TOR = r"""#!/bin/sh
echo "tor $*" >> "$SANDBOX/calls.log"
log=""
while [ $# -gt 0 ]; do
    [ "$1" = --Log ] && log=${2#notice file }
    shift
done
[ "${STUB_TOR_DIES:-0}" = 1 ] && { echo "[err] Could not bind to 127.0.0.1:9050" > "$log"; exit 1; }
echo "Nov 30 11:00:00.000 [notice] Bootstrapped 5% (conn): Connecting to a relay" > "$log"
if [ "${STUB_TOR_SILENT:-0}" = 1 ]; then
    echo "Nov 30 11:00:02.000 [warn] Problem bootstrapping. Stuck at 5% (conn):" \
        "Connecting to a relay. (No route to host; NOROUTE)" >> "$log"
else
    echo "Nov 30 11:00:03.000 [notice] Bootstrapped 100% (done): Done" >> "$log"
fi
exec /bin/sleep 30
"""

PROCNET_HEAD = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt\n"


def with_proc(sb: Sandbox) -> Sandbox:  # noqa: F811
    """Stand-ins for /proc/net (sockets) and /proc/sys (IPv6 switches) in the sandbox."""
    net, sys_ = sb.dir / "procnet", sb.dir / "procsys"
    net.mkdir(exist_ok=True)
    for f in ("tcp", "udp", "tcp6", "udp6"):
        (net / f).write_text(PROCNET_HEAD)
    for c in ("all", "default"):
        (sys_ / "net/ipv6/conf" / c).mkdir(parents=True, exist_ok=True)
        (sys_ / "net/ipv6/conf" / c / "disable_ipv6").write_text("0\n")
    sb.env["PHASE_PROCNET"], sb.env["PHASE_PROCSYS"] = str(net), str(sys_)
    return sb


def ipv6_disabled(sb: Sandbox) -> bool:  # noqa: F811
    return all((sb.dir / "procsys/net/ipv6/conf" / c / "disable_ipv6").read_text().strip()
               == "1" for c in ("all", "default"))


def resolver_quiet(sb: Sandbox) -> bool:  # noqa: F811
    """The guest's resolver reads /etc/hosts only and knows no name server."""
    return ((sb.sysetc / "nsswitch.conf").read_text() == "hosts: files\n"
            and (sb.sysetc / "resolv.conf").read_text() == "")


# /init's waits poll once a second; here a poll takes 20 ms, so a stub tor that dies (or
# never opens its port) has done so long before /init's 30 polls run out
SLEEP = r"""#!/bin/sh
echo "sleep $* => 0" >> "$SANDBOX/calls.log"
exec /bin/sleep 0.02
"""
SOCKS_OPEN = "   0: 0100007F:235A 00000000:0000 0A 00000000:00000000 00:00000000 00000000\n"


def with_tor(sb: Sandbox, port_open: bool = True) -> Sandbox:  # noqa: F811
    """A stub tor; its SOCKS port (127.0.0.1:9050) shows as listening from the start,
    unless not ``port_open``."""
    for name, text in (("tor", TOR), ("sleep", SLEEP)):
        p = sb.dir / "bin" / name
        p.write_text(text)
        p.chmod(0o755)
    with_proc(sb)
    if port_open:
        with open(sb.dir / "procnet" / "tcp", "a") as f:
            f.write(SOCKS_OPEN)
    return sb


def test_phase_proxy_goes_to_discover_and_fetch_and_nothing_else_is_asked(sb: Sandbox) -> None:  # noqa: F811
    o = with_proc(sb).run(f"{BASE} {PROVIDER} phase.proxy=socks5h://10.0.2.2:1080")
    for tool in CHAIN:
        assert len(o.called(tool)) == 1, (tool, o.calls)
    disc = o.called("phase-discover")[0].split()
    assert "--proxy=socks5h://10.0.2.2:1080" in disc
    assert "--provider=http://provider.example:8080" in disc
    assert not [a for a in disc if a.startswith(("--via", "--bootstrap", "--interface"))]
    assert "--proxy=socks5h://10.0.2.2:1080" in o.called("phase-fetch")[0].split()
    assert "PHASE-BOOT proxy url=socks5h://10.0.2.2:1080 tor=0" in o.marks()
    assert "mDNS, the DHT and QUIC are off" in o.out  # the console says so
    assert not o.called("tor")
    # the kexec'd node stage stays behind the same proxy, and no IPv6 chatter leaves
    assert "--proxy=socks5h://10.0.2.2:1080" in o.called("phase-boot")[0].split()
    assert ipv6_disabled(sb)
    assert resolver_quiet(sb)


def test_an_ipv6_proxy_keeps_ipv6(sb: Sandbox) -> None:  # noqa: F811
    o = with_proc(sb).run(f"{BASE} {PROVIDER} phase.proxy=socks5h://[fd00::1]:1080")
    assert "--proxy=socks5h://[fd00::1]:1080" in o.called("phase-fetch")[0].split()
    assert not ipv6_disabled(sb)


def test_without_a_proxy_nothing_changes(sb: Sandbox) -> None:  # noqa: F811
    o = with_proc(sb).run(f"{BASE} {PROVIDER}")
    assert "--via=mdns" in o.called("phase-discover")[0].split()
    assert not [c for c in o.calls if "--proxy" in c or "--tor" in c]
    assert not [m for m in o.marks() if m.startswith("PHASE-BOOT proxy")]
    assert not ipv6_disabled(sb)
    assert not (sb.sysetc / "nsswitch.conf").exists()


def test_phase_tor_starts_tor_and_uses_it_as_the_proxy(sb: Sandbox) -> None:  # noqa: F811
    o = with_tor(sb).run(f"{BASE} {PROVIDER} phase.tor=1")
    [tor] = o.called("tor")
    args = tor.split()
    assert args[args.index("--SocksPort") + 1] == "127.0.0.1:9050"
    assert args[args.index("--DataDirectory") + 1] == f"{sb.dir}/run/tor"  # tmpfs
    assert args[args.index("--RunAsDaemon") + 1] == "0"
    assert any(m.startswith("PHASE-BOOT tor started pid=") for m in o.marks())
    assert "PHASE-BOOT tor bootstrapped" in o.marks()
    # tor is up before the chain asks anything, and the chain asks through it
    assert o.calls.index(tor) < o.calls.index(o.called("phase-discover")[0])
    assert "--proxy=socks5h://127.0.0.1:9050" in o.called("phase-discover")[0].split()
    assert "--proxy=socks5h://127.0.0.1:9050" in o.called("phase-fetch")[0].split()
    assert "PHASE-BOOT proxy url=socks5h://127.0.0.1:9050 tor=1" in o.marks()
    assert "PHASE-BOOT tor socks open addr=127.0.0.1:9050" in o.marks()
    # the node stage starts its own tor: the next kernel is told phase.tor=1
    boot = o.called("phase-boot")[0].split()
    assert "--tor" in boot and not [a for a in boot if a.startswith("--proxy")]


def test_tor_that_dies_stops_the_boot(sb: Sandbox) -> None:  # noqa: F811
    sb.env["STUB_TOR_DIES"] = "1"
    o = with_tor(sb, port_open=False).run(f"{BASE} {PROVIDER} phase.tor=1")
    assert o.rescue() == "tor_failed" and "Could not bind" in o.stopped()
    assert "before it opened its SOCKS port" in o.stopped()
    assert not o.called("phase-discover")


def test_tor_that_never_opens_its_socks_port_stops_the_boot(sb: Sandbox) -> None:  # noqa: F811
    o = with_tor(sb, port_open=False).run(f"{BASE} {PROVIDER} phase.tor=1")
    assert o.rescue() == "tor_failed", o.out
    assert "did not open its SOCKS port 127.0.0.1:9050 in 30 s" in o.stopped()
    assert len(o.called("sleep")) == 30  # bounded: a second at a time
    assert not o.called("phase-discover")


def test_tor_that_cannot_bootstrap_says_why_and_tries_anyway(sb: Sandbox) -> None:  # noqa: F811
    sb.env["STUB_TOR_SILENT"] = "1"
    o = with_tor(sb).run(f"{BASE} {PROVIDER} phase.tor=1 phase.tor_timeout=3")
    assert len(o.called("sleep")) >= 3  # waited, a second at a time
    assert "PHASE-BOOT tor not-bootstrapped after=3s progress=5%" in o.marks()
    assert ("could not reach the Tor network in 3 s (bootstrapped 5%; tor says: [warn] "
            "Problem bootstrapping. Stuck at 5%") in o.out
    assert "No route to host" in o.out and "check the network and the clock" in o.out
    assert "--proxy=socks5h://127.0.0.1:9050" in o.called("phase-discover")[0].split()


def test_no_tor_in_the_image(sb: Sandbox) -> None:  # noqa: F811
    o = sb.run(f"{BASE} {PROVIDER} phase.tor=1")
    assert o.rescue() == "tor_missing" and not o.called("phase-discover")


@pytest.mark.parametrize("cmdline,reason,says", [
    ("phase.mode=internet phase.proxy=socks5h://10.0.2.2:1080 " + PROVIDER, "bad_proxy",
     "need phase.mode=private"),
    ("phase.mode=local phase.tor=1 " + PROVIDER, "bad_proxy", "need phase.mode=private"),
    ("phase.mode=private phase.tor=1 phase.proxy=socks5h://10.0.2.2:1080 " + PROVIDER,
     "bad_proxy", "not both"),
    ("phase.mode=private phase.tor=yes " + PROVIDER, "bad_proxy", "0 or 1"),
    ("phase.mode=private phase.proxy=socks5://10.0.2.2:1080 " + PROVIDER, "bad_proxy",
     "socks5h://IP:PORT"),
    ("phase.mode=private phase.proxy=http://10.0.2.2:3128 " + PROVIDER, "bad_proxy",
     "socks5h://IP:PORT"),
    ("phase.mode=private phase.proxy=socks5h://10.0.2.2:1080", "no_provider",
     "needs phase.provider"),
])
def test_unclear_proxy_settings_stop_before_any_network(sb: Sandbox, cmdline: str,  # noqa: F811
                                                        reason: str, says: str) -> None:
    o = with_tor(sb).run(f"console=ttyS0 phase.rescue=poweroff {cmdline}")
    assert o.rescue() == reason, o.out
    assert says in o.stopped()
    assert not o.called("udhcpc") and not o.called("phase-discover") and not o.called("tor")


ENV_STUB = r"""#!/bin/sh
echo "$(basename "$0") PHASE_PROXY=${PHASE_PROXY:-}" >> "$SANDBOX/env.log"
exec "$SANDBOX/bin/real-$(basename "$0")" "$@"
"""


def record_env(sb: Sandbox, tool: str) -> None:  # noqa: F811
    """``tool`` logs the PHASE_PROXY it was started with, then runs its stub."""
    b = sb.dir / "bin"
    (b / tool).rename(b / f"real-{tool}")
    (b / tool).write_text(ENV_STUB)
    (b / tool).chmod(0o755)


NODE = "console=ttyS0 phase.rescue=poweroff phase.stage=node phase.halt=1 phase.mode=private"


def test_the_node_stage_keeps_the_proxy(sb: Sandbox) -> None:  # noqa: F811
    with_proc(sb)
    record_env(sb, "plasmd")
    home = sb.dir / "run" / "home"
    home.mkdir(parents=True)
    (home / "config.toml").write_text('mode = "private"\nmdns = true\nworkers = 2\n')
    o = sb.run(f"{NODE} phase.proxy=socks5h://10.0.2.2:1080")
    assert "PHASE-BOOT proxy url=socks5h://10.0.2.2:1080 tor=0 stage=node" in o.marks()
    assert "plasmd listens on loopback only and without mDNS" in o.out
    assert ipv6_disabled(sb)
    assert resolver_quiet(sb)
    # every phase tool of the node stage gets the proxy (its HTTP goes through it)
    env = (sb.dir / "env.log").read_text().splitlines()
    assert env and set(env) == {"plasmd PHASE_PROXY=socks5h://10.0.2.2:1080"}
    assert (home / "config.toml").read_text() == 'mode = "private"\nmdns = false\nworkers = 2\n'
    assert "PHASE-BOOT listening external=none" in o.marks()
    assert not o.called("phase-discover") and not o.called("tor")


def test_the_node_stage_without_a_proxy_is_unchanged(sb: Sandbox) -> None:  # noqa: F811
    with_proc(sb)
    record_env(sb, "plasmd")
    o = sb.run(NODE)
    assert not [m for m in o.marks() if m.startswith(("PHASE-BOOT proxy", "PHASE-BOOT listening"))]
    assert set((sb.dir / "env.log").read_text().splitlines()) == {"plasmd PHASE_PROXY="}
    assert not ipv6_disabled(sb)


def test_the_node_stage_starts_its_own_tor(sb: Sandbox) -> None:  # noqa: F811
    sb.env["STUB_TOR_SILENT"] = "1"  # not bootstrapped: a node does not wait for it
    with_tor(sb)
    record_env(sb, "plasmd")
    o = sb.run(f"{NODE} phase.tor=1")
    assert len(o.called("tor")) == 1
    assert "PHASE-BOOT proxy url=socks5h://127.0.0.1:9050 tor=1 stage=node" in o.marks()
    assert "PHASE-BOOT tor socks open addr=127.0.0.1:9050" in o.marks()
    assert "plasmd PHASE_PROXY=socks5h://127.0.0.1:9050" in (sb.dir / "env.log").read_text()


def test_the_node_stage_refuses_a_proxy_outside_private_mode(sb: Sandbox) -> None:  # noqa: F811
    o = with_proc(sb).run("console=ttyS0 phase.rescue=poweroff phase.stage=node phase.halt=1 "
                          "phase.mode=local phase.proxy=socks5h://10.0.2.2:1080")
    assert o.rescue() == "bad_proxy" and not o.called("udhcpc") and not o.called("plasmd")


def test_listening_report_names_what_listens_beyond_loopback(sb: Sandbox) -> None:  # noqa: F811
    with_proc(sb)
    net = sb.dir / "procnet"
    with open(net / "udp", "a") as f:  # QUIC on loopback: fine; mDNS on 0.0.0.0: not
        f.write("  1: 0100007F:1151 00000000:0000 07 00000000:00000000 00:00000000 0\n")
        f.write("  2: 00000000:14E9 00000000:0000 07 00000000:00000000 00:00000000 0\n")
    with open(net / "tcp6", "a") as f:  # a listener on [::]:8080, and one connected
        f.write("  0: 00000000000000000000000000000000:1F90 "
                "00000000000000000000000000000000:0000 0A 0 0 0\n")
        f.write("  1: 00000000000000000000000001000000:0438 "
                "00000000000000000000000001000000:0001 01 0 0 0\n")
    o = sb.run(f"{NODE} phase.proxy=socks5h://10.0.2.2:1080")
    assert ("PHASE-BOOT listening external="
            "tcp6/00000000000000000000000000000000:8080,udp/00000000:5353") in o.marks()


def test_mkroot_adds_tor_with_its_libraries_or_leaves_it_out(tmp_path: Path) -> None:
    """boot/build's tor step: the binary and its ELF closure, or no tor and a log line
    (the host's own `true` stands in for tor: same steps, no download)."""
    import shutil
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "boot" / "lib"))
    try:
        import mkroot
    finally:
        sys.path.pop(0)
    exe = Path(shutil.which("true") or "/bin/true").resolve()
    libdirs = [p for p in (Path("/lib/x86_64-linux-gnu"), Path("/usr/lib/x86_64-linux-gnu"),
                           Path("/lib/aarch64-linux-gnu"), Path("/usr/lib/aarch64-linux-gnu"))
               if p.is_dir()]
    if not libdirs or shutil.which("readelf") is None:
        pytest.skip("needs readelf and a Debian multiarch library directory")
    root = tmp_path / "root"
    clo = mkroot.Closure(root, libdirs, "usr/lib/x")
    mkroot.add_tor(root, exe, clo)
    assert (root / "usr/bin/tor").exists() and (root / "usr/lib/x/libc.so.6").exists()
    bare = tmp_path / "bare"
    mkroot.add_tor(bare, exe, mkroot.Closure(bare, [], "usr/lib/x"))
    assert not (bare / "usr/bin/tor").exists()


@pytest.mark.parametrize("over_a_proxy", [False, True])
def test_dhcp_writes_no_name_server_over_a_proxy(tmp_path: Path, over_a_proxy: bool) -> None:
    """udhcpc's hook (the DHCP lease offers a name server): written without a proxy,
    left out over one, where the proxy resolves every name (a QEMU boot over tor once
    sent six DNS frames to the lease's server; what in the guest asked was not found)."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "ip").write_text("#!/bin/sh\nexit 0\n")
    (bin_ / "ip").chmod(0o755)
    env = {"PATH": f"{bin_}:/usr/bin:/bin", "PHASE_SYSETC": str(tmp_path),
           "interface": "eth0", "ip": "10.0.2.15", "mask": "24", "router": "10.0.2.2",
           "dns": "10.0.2.3", "domain": "example"}
    if over_a_proxy:
        env["PHASE_NO_DNS"] = "1"
    r = subprocess.run(["sh", str(LIB / "udhcpc.script"), "bound"], env=env,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    resolv = (tmp_path / "resolv.conf").read_text()
    if over_a_proxy:
        assert resolv == ""
    else:
        assert resolv == "search example\nnameserver 10.0.2.3\n"
