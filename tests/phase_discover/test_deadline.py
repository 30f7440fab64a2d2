"""phase-discover always ends by its deadline: no peers, silent peers, black holes."""

from __future__ import annotations

import subprocess
import time

from phase_discover import cli
from tests.conftest import script
from tests.phase_discover.conftest import Procs, silent

MARGIN_S = 1.5  # interpreter start before our clock starts, and scheduling slack


def _discover(*args: str, timeout: float) -> tuple[subprocess.CompletedProcess[str], float]:
    t0 = time.monotonic()
    r = subprocess.run([script("phase-discover"), *args, f"--timeout={timeout:g}"],
                       capture_output=True, text=True, timeout=timeout + 20)
    return r, time.monotonic() - t0


def test_no_peers_at_all_exits_69_at_once() -> None:
    r, took = _discover("nodes", "--via=dht", timeout=3)
    assert r.returncode == 69 and r.stdout == ""
    assert "none_found" in r.stderr
    assert took < 3 + MARGIN_S


def test_no_peers_on_loopback_mdns_and_dht_exits_by_deadline(procs: Procs) -> None:
    hole = silent(procs, "udp")
    r, took = _discover("nodes", "--via=both", "--interface=lo", f"--bootstrap={hole}",
                        timeout=2)
    assert r.returncode == 69 and r.stdout == ""
    assert took < 2 + MARGIN_S


def test_bootstrap_peer_that_swallows_packets(procs: Procs) -> None:
    hole = silent(procs, "udp")
    r, took = _discover("nodes", "--via=dht", f"--bootstrap={hole}", timeout=2)
    assert r.returncode == 69
    assert took < 2 + MARGIN_S


def test_peers_that_handshake_but_never_answer(procs: Procs) -> None:
    mutes = [silent(procs, "quic") for _ in range(3)]
    r, took = _discover("nodes", "--via=dht", *(f"--bootstrap={m}" for m in mutes), timeout=2)
    assert r.returncode == 69
    assert took < 2 + MARGIN_S
    r, took = _discover("boot", "--channel=stable", "--arch=x86_64", "--via=dht",
                        f"--bootstrap={mutes[0]}", timeout=2)
    assert r.returncode == 69
    assert took < 2 + MARGIN_S


def test_http_provider_that_never_answers(procs: Procs) -> None:
    import socket
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)  # accepts into the backlog, never reads or answers
    try:
        port = srv.getsockname()[1]
        r, took = _discover("boot", "--channel=stable", "--arch=x86_64", "--via=dht",
                            f"--provider=http://127.0.0.1:{port}", timeout=2)
        assert r.returncode == 69
        assert took < 2 + MARGIN_S
    finally:
        srv.close()


def test_proxy_that_never_answers() -> None:
    from tests.socks_hostile import HostileSocks

    for mode in ("silent", "drip"):  # says nothing; or its reply a byte at a time
        with HostileSocks(mode, delay_s=0.5) as proxy:
            r, took = _discover("boot", "--channel=stable", "--arch=x86_64",
                                "--provider=http://provider.invalid", f"--proxy={proxy.url}",
                                timeout=2)
        assert r.returncode == 69, (mode, r.stderr)
        assert took < 2 + MARGIN_S


def test_usage_errors(run_tool) -> None:  # type: ignore[no-untyped-def]
    for argv in (["nodes", "--via=carrier-pigeon"], ["nodes", "--timeout=-1"],
                 ["nodes", "--limit=0"], ["nodes", "--bootstrap=nowhere"],
                 ["nodes", "--min-memory=lots"], ["boot", "--channel=Stable!", "--arch=x86_64"],
                 ["boot", "--channel=stable", "--arch=pdp11"],
                 ["boot", "--channel=stable", "--arch=x86_64", "--provider=ftp://x"]):
        assert run_tool(cli, argv).code == 64, argv


def test_help_is_fast_and_documented(run_tool) -> None:  # type: ignore[no-untyped-def]
    r = run_tool(cli, ["--help"])
    assert r.code == 0 and "Exit status" in r.out and "--via" in r.out
