"""boot/init over a proxy (phase.proxy, phase.tor), in plain sh with stub tools (no QEMU).

What a boot cannot show here: tor bootstrapping needs the real Tor network, which tests
cannot reach. So a stub `tor` stands in: it records its arguments and writes tor's
"Bootstrapped 100%" line to the log file it was given, and the test checks that /init
started it as the proxy and pointed phase-discover and phase-fetch at it. The proxy
path itself (every request through SOCKS5, nothing else on the wire) is proven against a
real proxy in tests/phase_fetch/test_proxy_netns.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.boot.test_init_branches import CHAIN, Sandbox, sb  # noqa: F401 - a fixture

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
[ "${STUB_TOR_SILENT:-0}" = 1 ] \
    || echo "Nov 30 11:00:00.000 [notice] Bootstrapped 100% (done): Done" > "$log"
exec /bin/sleep 30
"""


def with_tor(sb: Sandbox) -> Sandbox:  # noqa: F811
    p = sb.dir / "bin" / "tor"
    p.write_text(TOR)
    p.chmod(0o755)
    return sb


def test_phase_proxy_goes_to_discover_and_fetch_and_nothing_else_is_asked(sb: Sandbox) -> None:  # noqa: F811
    o = sb.run(f"{BASE} {PROVIDER} phase.proxy=socks5h://10.0.2.2:1080")
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


def test_without_a_proxy_nothing_changes(sb: Sandbox) -> None:  # noqa: F811
    o = sb.run(f"{BASE} {PROVIDER}")
    assert "--via=mdns" in o.called("phase-discover")[0].split()
    assert not [c for c in o.calls if "--proxy" in c]
    assert not [m for m in o.marks() if m.startswith("PHASE-BOOT proxy")]


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


def test_tor_that_dies_stops_the_boot(sb: Sandbox) -> None:  # noqa: F811
    sb.env["STUB_TOR_DIES"] = "1"
    o = with_tor(sb).run(f"{BASE} {PROVIDER} phase.tor=1")
    assert o.rescue() == "tor_failed" and "Could not bind" in o.stopped()
    assert not o.called("phase-discover")


def test_tor_slow_to_bootstrap_is_tried_anyway(sb: Sandbox) -> None:  # noqa: F811
    sb.env["STUB_TOR_SILENT"] = "1"
    o = with_tor(sb).run(f"{BASE} {PROVIDER} phase.tor=1 phase.tor_timeout=3")
    assert len(o.called("sleep")) >= 3  # waited, a second at a time
    assert "has not bootstrapped in 3 s" in o.out
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


def test_the_proxy_is_for_the_boot_stage_only(sb: Sandbox, tmp_path: Path) -> None:  # noqa: F811
    # after kexec (phase.stage=node) /init neither checks nor starts anything for a proxy
    o = with_tor(sb).run(f"{BASE} phase.stage=node phase.halt=1 phase.tor=1")
    assert not o.called("tor") and not o.called("phase-discover")


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
