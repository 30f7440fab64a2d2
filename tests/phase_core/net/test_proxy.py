"""HTTP through a SOCKS5 proxy (phase_core.proxy): URL parsing, a real proxy
(microsocks) on loopback, and hostile proxies that must end in clear errors."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest

from phase_core import exitcodes, proxy
from phase_core.errors import ConfigError, UsageError
from phase_core.protocol.socks5 import (
    ProxyAuthFailed,
    ProxyConnectFailed,
    ProxyProtocol,
    ProxyTimeout,
    ProxyUnreachable,
    ProxyUnsupported,
)
from tests.socks_hostile import HostileSocks, Microsocks, closed_port, wait_listening


@pytest.mark.parametrize("url,host,port,user", [
    ("socks5h://127.0.0.1:9050", "127.0.0.1", 9050, None),
    ("socks5h://localhost:9050/", "127.0.0.1", 9050, None),
    ("socks5h://10.0.0.1", "10.0.0.1", 1080, None),
    ("socks5h://[::1]:1", "::1", 1, None),
    ("socks5h://al%40ice:p%3Ass@127.0.0.1:9050", "127.0.0.1", 9050, b"al@ice"),
])
def test_parse(url: str, host: str, port: int, user: bytes | None) -> None:
    p = proxy.parse(url)
    assert (p.host, p.port, p.username) == (host, port, user)
    assert "ss" not in p.name and "ice" not in repr(p)  # never the credentials


@pytest.mark.parametrize("url,match", [
    ("socks5://127.0.0.1:1080", "resolve host names on this machine"),
    ("http://127.0.0.1:8080", "socks5h://HOST:PORT"),
    ("socks5h://proxy.example:1080", "must be an IP address"),
    ("socks5h://127.0.0.1:99999", "not a socks5h"),
    ("socks5h://127.0.0.1:1080/path", "without a path"),
    ("socks5h://127.0.0.1:1080?x=1", "without a path"),
    ("socks5h://127.0.0.1:1 0", "control characters"),
    ("socks5h://u:@127.0.0.1:1", "1 to 255 bytes"),
])
def test_parse_refuses(url: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        proxy.parse(url)


def test_resolve_flag_wins_and_errors_by_origin() -> None:
    assert proxy.resolve(None, None) is None and proxy.resolve(None, "") is None
    assert proxy.resolve("socks5h://127.0.0.1:1", "socks5h://127.0.0.1:2").port == 1  # type: ignore[union-attr]
    assert proxy.resolve(None, "socks5h://127.0.0.1:2").port == 2  # type: ignore[union-attr]
    with pytest.raises(UsageError) as u:
        proxy.resolve("socks5://127.0.0.1:1", None)
    assert u.value.exit_code == exitcodes.USAGE
    with pytest.raises(ConfigError, match="PHASE_PROXY") as c:
        proxy.resolve(None, "junk")
    assert c.value.exit_code == exitcodes.CONFIG


# -- a real proxy ------------------------------------------------------------------------

class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"hello {self.headers.get('Host')}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def web() -> Iterator[int]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield srv.server_address[1]
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.fixture
def microsocks() -> Iterator[str]:
    with Microsocks() as m:
        wait_listening(m.ip, m.port, m.proc)
        yield m.url


def test_http_through_microsocks(microsocks: str, web: int) -> None:
    conn = proxy.HTTPConnection("127.0.0.1", web, proxy=proxy.parse(microsocks), timeout=10)
    conn.request("GET", "/")
    resp = conn.getresponse()
    assert resp.status == 200 and resp.read() == f"hello 127.0.0.1:{web}".encode()
    # urllib through the same proxy, with the name resolved by the proxy (localhost)
    with proxy.urlopener(proxy.parse(microsocks)).open(f"http://localhost:{web}/x",
                                                       timeout=10) as r:
        assert r.read() == f"hello localhost:{web}".encode()


def test_the_destination_name_goes_to_the_proxy_unresolved() -> None:
    with HostileSocks("refused") as s:
        with pytest.raises(ProxyConnectFailed, match="connection refused"):
            proxy.open_tunnel(proxy.parse(s.url), "mirror.invalid", 8443, 5)
    assert s.requests[0]["atyp"] == 3 and s.requests[0]["host"] == "mirror.invalid"
    assert s.requests[0]["port"] == 8443 and s.requests[0]["cmd"] == 1


# -- hostile proxies ---------------------------------------------------------------------

@pytest.mark.parametrize("mode,error,match", [
    ("bad_version", ProxyProtocol, "version 4"),
    ("http", ProxyProtocol, "version 72"),
    ("oversize", ProxyProtocol, "past the end of its CONNECT reply"),
    ("close", ProxyProtocol, "closed the connection"),
    ("silent", ProxyTimeout, "did not complete the SOCKS5 handshake"),
    ("drip", ProxyTimeout, "did not complete the SOCKS5 handshake"),
    ("no_method", ProxyAuthFailed, "none of the offered methods"),
    ("no_names", ProxyUnsupported, "address type not supported"),
])
def test_hostile_proxy(mode: str, error: type[Exception], match: str) -> None:
    with HostileSocks(mode, delay_s=0.2) as s:
        with pytest.raises(error, match=match):
            proxy.open_tunnel(proxy.parse(s.url), "mirror.example", 80, 0.5)


def test_login_refused() -> None:
    with HostileSocks("auth_refused") as s:
        url = s.url.replace("socks5h://", "socks5h://bob:hunter2@")
        with pytest.raises(ProxyAuthFailed, match="refused the user name") as e:
            proxy.open_tunnel(proxy.parse(url), "mirror.example", 80, 5)
    assert s.requests[0]["methods"] == [2]
    assert (s.requests[0]["username"], s.requests[0]["password"]) == (b"bob", b"hunter2")
    assert "hunter2" not in str(e.value)


def test_no_proxy_listening() -> None:
    with pytest.raises(ProxyUnreachable, match="cannot reach the proxy") as e:
        proxy.open_tunnel(proxy.parse(f"socks5h://127.0.0.1:{closed_port()}"), "m", 80, 5)
    assert e.value.exit_code == exitcodes.TEMPFAIL and e.value.slug == "proxy_unreachable"
