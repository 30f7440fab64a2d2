"""HTTP(S) through a SOCKS5 proxy with remote DNS (``socks5h://``): the blocking adapter.

``parse`` reads ``socks5h://[user:password@]HOST[:PORT]`` (port 1080 by default).
The proxy's own host must be an IP address or ``localhost``: a host name there would
need a local DNS query, which this mode exists to avoid. ``resolve`` picks the flag or
``PHASE_PROXY`` (a bad flag is 64, a bad variable 78). ``open_tunnel`` connects to the
proxy and runs the handshake of ``protocol.socks5``, the whole of it within one
timeout (a proxy that drips its reply cannot stretch it); the destination's name goes
to the proxy unresolved. ``HTTPConnection``/``HTTPSConnection`` are ``http.client``'s
with their TCP connection replaced by the tunnel, and ``urlopener`` a urllib opener
built on them (no other proxy handler: ``http_proxy`` in the environment is ignored).
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

from phase_core.errors import ConfigError, PhaseError, UsageError
from phase_core.protocol.socks5 import (
    ProxyProtocol,
    ProxyTimeout,
    ProxyUnreachable,
    Socks5Client,
)

SCHEME = "socks5h"
DEFAULT_PORT = 1080
MAX_URL_CHARS = 1024
ENV = "PHASE_PROXY"


@dataclass(frozen=True)
class Proxy:
    host: str  # an IP address
    port: int
    username: bytes | None = field(default=None, repr=False)
    password: bytes | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        """For logs and messages: never the credentials."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{SCHEME}://{host}:{self.port}"

    def __str__(self) -> str:
        return self.name


def parse(url: str, what: str = "--proxy") -> Proxy:
    """A ``Proxy`` from ``socks5h://...``; ``ValueError`` says what is wrong."""
    if len(url) > MAX_URL_CHARS or any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise ValueError(f"{what} is not a URL (too long, or spaces or control characters)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError(f"{what} is not a socks5h://HOST:PORT URL") from None
    if parts.scheme == "socks5":
        raise ValueError(f"{what}: socks5:// would resolve host names on this machine; use "
                         "socks5h:// (the proxy resolves them)")
    if parts.scheme != SCHEME or not parts.hostname:
        raise ValueError(f"{what} must be socks5h://HOST:PORT (a SOCKS5 proxy with remote DNS)")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{what} must be socks5h://HOST:PORT, without a path or query")
    host = parts.hostname
    if host == "localhost":
        host = "127.0.0.1"
    try:
        host = str(ipaddress.ip_address(host))
    except ValueError:
        raise ValueError(f"{what}: the proxy's host must be an IP address or localhost, not "
                         f"{host[:80]!r} (its name would be looked up in local DNS)") from None
    username = password = None
    if parts.username is not None or parts.password is not None:
        username = unquote(parts.username or "").encode()
        password = unquote(parts.password or "").encode()
        if not 1 <= len(username) <= 255 or not 1 <= len(password) <= 255:
            raise ValueError(f"{what}: user name and password must each be 1 to 255 bytes")
    return Proxy(host, port or DEFAULT_PORT, username, password)


def resolve(flag: str | None, env: str | None) -> Proxy | None:
    """The proxy from ``--proxy`` (wins) or ``PHASE_PROXY``; None when neither is set."""
    if flag is not None:
        try:
            return parse(flag, "--proxy")
        except ValueError as e:
            raise UsageError(str(e), hint="e.g. --proxy=socks5h://127.0.0.1:9050") from None
    if env:
        try:
            return parse(env, ENV)
        except ValueError as e:
            raise ConfigError(str(e), hint=f"fix or unset {ENV}") from None
    return None


def open_tunnel(proxy: Proxy, host: str, port: int, timeout_s: float) -> socket.socket:
    """A socket connected through ``proxy`` to ``host:port``, within ``timeout_s`` in all."""
    deadline = time.monotonic() + timeout_s
    client = Socks5Client(host, port, username=proxy.username, password=proxy.password,
                          proxy_name=f"the proxy {proxy.name}")
    family = socket.AF_INET6 if ":" in proxy.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout_s)
        try:
            sock.connect((proxy.host, proxy.port))
        except TimeoutError:
            raise ProxyTimeout(f"connecting to the proxy {proxy.name} timed out after "
                               f"{timeout_s:g} s") from None
        except OSError as e:
            raise ProxyUnreachable(f"cannot reach the proxy {proxy.name}: "
                                   f"{e.strerror or type(e).__name__}",
                                   hint="is the SOCKS5 proxy running there? (Phase Boot: "
                                        "phase.tor=1 starts tor on 127.0.0.1:9050)") from None
        while True:
            out = client.data_to_send()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            sock.settimeout(left)
            if out:
                sock.sendall(out)
            if client.done:
                break
            data = sock.recv(client.need())
            if not data:
                raise ProxyProtocol(f"the proxy {proxy.name} closed the connection in the "
                                    f"middle of the handshake (connecting to {host}:{port})")
            client.receive(data)
        _check_quiet(sock, proxy)
        return sock
    except TimeoutError:
        sock.close()
        raise ProxyTimeout(f"the proxy {proxy.name} did not complete the SOCKS5 handshake "
                           f"for {host}:{port} within {timeout_s:g} s") from None
    except PhaseError:
        sock.close()
        raise
    except OSError as e:
        sock.close()
        raise ProxyUnreachable(f"the connection to the proxy {proxy.name} failed during the "
                               f"handshake: {e.strerror or type(e).__name__}") from None
    except BaseException:
        sock.close()
        raise


def _check_quiet(sock: socket.socket, proxy: Proxy) -> None:
    """HTTP and TLS clients speak first: bytes already waiting are the proxy's, and wrong."""
    timeout = sock.gettimeout()
    sock.settimeout(0.0)  # with a timeout, Python would wait for data instead of answering
    try:
        extra = sock.recv(1, socket.MSG_PEEK)
    except (BlockingIOError, InterruptedError):
        return
    finally:
        sock.settimeout(timeout)
    if extra:
        raise ProxyProtocol(f"the proxy {proxy.name} sent bytes past the end of its "
                            "CONNECT reply", hint="is it a SOCKS5 proxy?")


# -- http.client and urllib over the tunnel ---------------------------------------------

def _timeout(value: Any) -> float:
    return value if isinstance(value, int | float) else 60.0


def _tunnel(proxy: Proxy, host: str, port: int, timeout: Any) -> socket.socket:
    """A tunnel to ``host:port`` set up as http.client sets up its own sockets."""
    sock = open_tunnel(proxy, host, port, _timeout(timeout))
    sock.settimeout(timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class HTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, port: int | None = None, *, proxy: Proxy,
                 **kw: Any) -> None:
        super().__init__(host, port, **kw)
        self.proxy = proxy

    def connect(self) -> None:
        self.sock = _tunnel(self.proxy, self.host, self.port, self.timeout)


class HTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int | None = None, *, proxy: Proxy,
                 context: ssl.SSLContext | None = None, **kw: Any) -> None:
        self.tls = context or ssl.create_default_context()
        super().__init__(host, port, context=self.tls, **kw)
        self.proxy = proxy

    def connect(self) -> None:
        sock = _tunnel(self.proxy, self.host, self.port, self.timeout)
        self.sock = self.tls.wrap_socket(sock, server_hostname=self.host)


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, proxy: Proxy) -> None:
        super().__init__()
        self.proxy = proxy

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        def conn(host: str, **kw: Any) -> HTTPConnection:
            return HTTPConnection(host, proxy=self.proxy, **kw)
        return self.do_open(conn, req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, proxy: Proxy) -> None:
        super().__init__()
        self.proxy = proxy

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        def conn(host: str, **kw: Any) -> HTTPSConnection:
            kw.pop("check_hostname", None)
            return HTTPSConnection(host, proxy=self.proxy, **kw)
        return self.do_open(conn, req)


def urlopener(proxy: Proxy) -> urllib.request.OpenerDirector:
    """A urllib opener whose every http(s) request (redirects too) goes through ``proxy``."""
    return urllib.request.build_opener(urllib.request.ProxyHandler({}), _HTTPHandler(proxy),
                                       _HTTPSHandler(proxy))


__all__ = ["ENV", "HTTPConnection", "HTTPSConnection", "Proxy", "open_tunnel", "parse",
           "resolve", "urlopener"]
