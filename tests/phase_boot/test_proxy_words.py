"""Private mode over a proxy carried across kexec: phase-boot appends the proxy to the
next kernel's command line as a local choice, which a signed cmdline cannot set or drop."""

from __future__ import annotations

import pytest

from phase_boot import plan
from tests.phase_boot.conftest import Boot

SIGNED = "console=ttyS0 phase.stage=node phase.proxy=socks5h://203.0.113.9:1080 phase.tor=0"


def test_the_proxy_goes_to_the_next_stage_and_the_signed_one_is_dropped() -> None:
    body = {"cmdline": SIGNED, "channel": "stable"}
    words = plan.proxy_words("private", "socks5h://10.77.0.1:1080", tor=False)
    assert plan.cmdline(body, "private", words) == (
        "console=ttyS0 phase.stage=node phase.mode=private phase.channel=stable "
        "phase.proxy=socks5h://10.77.0.1:1080")
    # without a local proxy, a signed one does not switch the next stage to it either
    assert plan.cmdline(body, "private") == (
        "console=ttyS0 phase.stage=node phase.mode=private phase.channel=stable")


def test_tor_goes_to_the_next_stage_as_phase_tor() -> None:
    assert plan.proxy_words("private", None, tor=True) == ("phase.tor=1",)
    assert plan.proxy_words("private", None, tor=False) == ()
    assert plan.proxy_words(None, None, tor=False) == ()
    # as given (a login too: tor keeps streams apart by it)
    assert plan.proxy_words("private", "socks5h://u:p@127.0.0.1:9050", tor=False) == (
        "phase.proxy=socks5h://u:p@127.0.0.1:9050",)


@pytest.mark.parametrize("mode,proxy,tor,says", [
    ("local", "socks5h://10.0.2.2:1080", False, "need --mode=private"),
    (None, None, True, "need --mode=private"),
    ("private", "socks5h://10.0.2.2:1080", True, "not both"),
    ("private", "socks5://10.0.2.2:1080", False, "socks5h://"),
    ("private", "socks5h://proxy.example:1080", False, "IP address"),
    ("private", "socks5h://10.0.2.2:1080 init=/bin/sh", False, "not a URL"),
])
def test_unclear_proxy_choices_are_refused(mode: str | None, proxy: str | None, tor: bool,
                                           says: str) -> None:
    with pytest.raises(ValueError, match=says):
        plan.proxy_words(mode, proxy, tor)


def test_phase_boot_loads_the_node_stage_with_the_proxy(bt: Boot) -> None:
    bt.files()
    bt.manifest()
    r = bt.run("--mode=private", "--proxy=socks5h://10.77.0.1:1080")
    assert r.code == 0, r.err
    [rec] = r.records
    assert rec["cmdline"].endswith(
        "phase.mode=private phase.channel=stable phase.proxy=socks5h://10.77.0.1:1080")
    r = bt.run("--mode=private", "--tor")
    assert r.code == 0 and r.records[0]["cmdline"].endswith(" phase.tor=1")


def test_phase_boot_refuses_a_proxy_outside_private_mode(bt: Boot) -> None:
    bt.files()
    bt.manifest()
    r = bt.run("--mode=local", "--proxy=socks5h://10.77.0.1:1080")
    assert r.code == 64 and "--mode=private" in r.err
    assert bt.run("--mode=private", "--proxy=socks5h://h.example:1").code == 64
