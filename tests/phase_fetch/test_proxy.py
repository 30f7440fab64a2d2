"""phase-fetch --proxy: blobs through a real SOCKS5 proxy (microsocks) on loopback, and
every way a proxy can fail ending in its own slug and exit code, the store sound."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.phase_fetch.badserver import Route
from tests.phase_fetch.conftest import FAST, blob, cid, store_is_sound, tls_badserver
from tests.socks_hostile import HostileSocks, Microsocks, closed_port, wait_listening

DATA = blob(200_000, seed=7)
ID = cid(DATA)
PATH = f"/sha256/{ID[7:]}"


@pytest.fixture
def socks() -> Iterator[Microsocks]:
    with Microsocks() as m:
        wait_listening(m.ip, m.port, m.proc)
        yield m


def test_get_through_the_proxy(server, run, cas, socks):
    server.routes[PATH] = Route(DATA)
    # "localhost" is a name: the proxy resolves it (a local lookup would not be asked)
    mirror = f"http://localhost:{server.port}"
    r = run("get", ID, f"--mirror={mirror}", f"--proxy={socks.url}", *FAST)
    assert r.code == 0, r.err
    assert r.records[0]["source"] == mirror
    assert r.events("fetch.proxy")[0]["proxy"] == socks.url
    assert store_is_sound(cas) == [ID] and len(server.requests(PATH)) == 1


def test_phase_proxy_from_the_environment(server, run, cas, socks, monkeypatch):
    server.routes[PATH] = Route(DATA)
    monkeypatch.setenv("PHASE_PROXY", socks.url)
    r = run("get", ID, f"--mirror={server.url}", *FAST)
    assert r.code == 0, r.err and r.events("fetch.proxy")
    monkeypatch.setenv("PHASE_PROXY", "socks5://127.0.0.1:1")
    r = run("get", ID, f"--mirror={server.url}", *FAST)
    assert r.code == 78 and "PHASE_PROXY" in r.err


def test_pipeline_request_through_the_proxy(server, run, cas, socks):
    import json

    server.routes[PATH] = Route(DATA)
    req = {"v": 1, "type": "fetch", "id": ID, "size_bytes": len(DATA),
           "mirrors": [f"http://localhost:{server.port}"]}
    r = run(f"--proxy={socks.url}", *FAST, stdin=(json.dumps(req) + "\n").encode())
    assert r.code == 0, r.err
    assert [x["type"] for x in r.records] == ["blob", "fetch"]


@pytest.mark.parametrize("mode,code,slug", [
    ("bad_version", 76, "proxy_protocol"),
    ("oversize", 76, "proxy_protocol"),
    ("close", 76, "proxy_protocol"),
    ("silent", 75, "proxy_timeout"),
    ("drip", 75, "proxy_timeout"),
    ("no_method", 78, "proxy_auth"),
    ("no_names", 69, "proxy_unsupported"),
])
def test_a_failing_proxy_ends_the_fetch_with_its_own_error(run, cas, mode, code, slug):
    with HostileSocks(mode, delay_s=0.3) as s:
        r = run("get", ID, "--mirror=http://mirror-a.invalid", "--mirror=http://mirror-b.invalid",
                f"--proxy={s.url}", "--connect-timeout=1", "--retries=0")
    assert r.code == code, r.err
    [failed] = r.events("phase-fetch.failed")
    assert failed["error"] == slug and failed["exit_code"] == code
    # the second mirror is not tried: through the same proxy it would fail the same way
    assert len(s.requests) == 1 and s.requests[0].get("host") in (None, "mirror-a.invalid")
    assert store_is_sound(cas) == []


def test_login_refused(run, cas):
    with HostileSocks("auth_refused") as s:
        r = run("get", ID, "--mirror=http://m.invalid", "--retries=0",
                f"--proxy={s.url.replace('//', '//me:wrong-secret@')}")
    assert r.code == 78 and r.events("phase-fetch.failed")[0]["error"] == "proxy_auth"
    assert "wrong-secret" not in r.err and s.requests[0]["password"] == b"wrong-secret"


def test_no_proxy_listening(run, cas):
    r = run("get", ID, "--mirror=http://m.invalid", "--retries=1", "--backoff=0",
            f"--proxy=socks5h://127.0.0.1:{closed_port()}")
    assert r.code == 75 and r.events("phase-fetch.failed")[0]["error"] == "proxy_unreachable"
    assert len(r.events("fetch.retry")) == 1  # retried (a proxy may be starting), then given up


def test_a_destination_the_proxy_cannot_reach_is_one_source_failing(server, run, cas):
    server.routes[PATH] = Route(DATA)
    with HostileSocks("refused") as s:
        r = run("get", ID, "--mirror=http://gone.invalid", "--retries=0",
                f"--proxy={s.url}")
    assert r.code == 75, r.err
    [failed] = r.events("fetch.source_failed")
    assert failed["error"] == "proxy_connect_failed" and "gone.invalid:80" in failed["message"]


@pytest.fixture
def tls_localhost(tmp_path):
    yield from tls_badserver(tmp_path, "localhost")


def test_https_inside_the_tunnel_verifies_the_mirror_by_name(tls_localhost, run, cas, socks,
                                                             monkeypatch):
    server, crt = tls_localhost
    server.routes[PATH] = Route(DATA)
    mirror = f"https://localhost:{server.port}"
    r = run("get", ID, f"--mirror={mirror}", f"--proxy={socks.url}", "--retries=0")
    assert r.code == 69 and r.events("fetch.source_failed")[0]["error"] == "tls_verify_failed"
    assert server.log == []  # nothing was asked over the unverified connection
    monkeypatch.setenv("SSL_CERT_FILE", str(crt))
    r = run("get", ID, f"--mirror={mirror}", f"--proxy={socks.url}", "--retries=0")
    assert r.code == 0, r.err
    assert store_is_sound(cas) == [ID]
