"""phase-discover boot --proxy: the HTTP provider through a real SOCKS5 proxy
(microsocks), mDNS and the DHT refused or skipped, and failing proxies named."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from phase_discover import cli
from tests.phase_discover.test_boot import manifest, provider  # noqa: F401 - a fixture
from tests.socks_hostile import HostileSocks, Microsocks, closed_port, wait_listening

BOOT = ["boot", "--channel=stable", "--arch=x86_64", "--timeout=5"]


@pytest.fixture
def socks() -> Iterator[Microsocks]:
    with Microsocks() as m:
        wait_listening(m.ip, m.port, m.proc)
        yield m


def events(r, name: str) -> list[dict]:  # type: ignore[no-untyped-def,type-arg]
    return [x for x in r.logs if x.get("event") == name]


def test_provider_through_the_proxy(run_tool, provider, socks) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    env = manifest()
    provider["/stable/x86_64/manifest.json"] = env
    url = provider["url"].replace("127.0.0.1", "localhost")  # a name, resolved by the proxy
    r = run_tool(cli, [*BOOT, f"--provider={url}", f"--proxy={socks.url}", "-v"])
    assert r.code == 0, r.err
    [rec] = r.records
    assert rec["type"] == "boot" and rec["envelope"] == env and rec["provider_url"] == url
    [only] = events(r, "phase-discover.proxy_only")
    assert only["proxy"] == socks.url and "mDNS and the DHT are off" in only["message"]


def test_phase_proxy_and_phase_bootstrap(run_tool, provider, socks, monkeypatch) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    provider["/stable/x86_64/manifest.json"] = manifest()
    monkeypatch.setenv("PHASE_PROXY", socks.url)
    monkeypatch.setenv("PHASE_BOOTSTRAP", "127.0.0.1:9")
    r = run_tool(cli, [*BOOT, f"--provider={provider['url']}", "-v"])
    assert r.code == 0, r.err
    assert events(r, "phase-discover.bootstrap_ignored")
    assert not events(r, "phase-discover.dht_bootstrapped")


@pytest.mark.parametrize("extra,match", [
    (["--via=mdns"], "--via asks for mDNS or the DHT"),
    (["--via=both"], "--via asks for mDNS or the DHT"),
    (["--bootstrap=127.0.0.1:9"], "--bootstrap asks for"),
    (["--interface=lo"], "--interface asks for"),
    ([], "no --provider was given"),
    (["--provider=http://p.invalid", "--proxy=socks5://127.0.0.1:1"], "use socks5h://"),
    (["--provider=http://p.invalid", "--proxy=socks5h://proxy.invalid:1"], "IP address"),
])
def test_usage_refused(run_tool, extra: list[str], match: str) -> None:  # type: ignore[no-untyped-def]
    argv = [*BOOT, *extra]
    if not any(a.startswith("--proxy") for a in argv):
        argv.append("--proxy=socks5h://127.0.0.1:9050")
    r = run_tool(cli, argv)
    assert r.code == 64 and match in r.err


def test_phase_proxy_refused_where_it_cannot_apply(run_tool, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("PHASE_PROXY", "socks5h://127.0.0.1:9050")
    r = run_tool(cli, ["nodes", "--timeout=1"])
    assert r.code == 78 and "PHASE_PROXY is set" in r.err
    monkeypatch.setenv("PHASE_PROXY", "tor")
    r = run_tool(cli, [*BOOT, "--provider=http://p.invalid"])
    assert r.code == 78 and "PHASE_PROXY" in r.err


@pytest.mark.parametrize("mode,code,slug", [
    ("bad_version", 76, "proxy_protocol"),
    ("oversize", 76, "proxy_protocol"),
    ("no_method", 78, "proxy_auth"),
    ("silent", 69, None),  # a proxy that never answers: the deadline ends the search
    ("refused", 69, "proxy_connect_failed"),  # the proxy works; the provider is not there
])
def test_failing_proxy(run_tool, mode: str, code: int, slug: str | None) -> None:  # type: ignore[no-untyped-def]
    with HostileSocks(mode) as s:
        r = run_tool(cli, ["boot", "--channel=stable", "--arch=x86_64", "--timeout=1.5",
                           "--provider=http://provider.invalid", f"--proxy={s.url}"])
    assert r.code == code, r.err
    assert slug is None or any(x.get("error") == slug for x in r.logs), r.err
    assert s.requests and s.requests[0].get("host") in (None, "provider.invalid")


def test_no_proxy_listening(run_tool) -> None:  # type: ignore[no-untyped-def]
    r = run_tool(cli, [*BOOT, "--provider=http://p.invalid",
                       f"--proxy=socks5h://127.0.0.1:{closed_port()}"])
    assert r.code == 75 and any(x.get("error") == "proxy_unreachable" for x in r.logs)


def test_an_onion_provider_goes_to_the_proxy_as_a_name(run_tool) -> None:  # type: ignore[no-untyped-def]
    onion = "http://" + "a2" * 28 + ".onion:8080"  # only tor can reach it: never looked up here
    with HostileSocks("refused") as s:
        r = run_tool(cli, [*BOOT, f"--provider={onion}", f"--proxy={s.url}"])
    assert r.code == 69
    assert (s.requests[0]["atyp"], s.requests[0]["host"]) == (3, "a2" * 28 + ".onion")
