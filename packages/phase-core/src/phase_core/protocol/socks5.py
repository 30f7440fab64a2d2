"""SOCKS5 client handshake (RFC 1928 CONNECT, RFC 1929 username/password), sans-I/O.

The client always sends the destination's host name to the proxy (address type 3,
"socks5h"): nothing is resolved locally. IP literals go as addresses (types 1, 4).

    client = Socks5Client("mirror.example", 443)
    send(client.data_to_send())            # the greeting
    while not client.done:
        client.receive(recv_exactly(client.need()))
        send(client.data_to_send())        # the auth request, then CONNECT

``need()`` is the exact number of bytes that completes the reply being read, so an
adapter never reads past the handshake into the tunnelled stream. Every reply is
bounded (the longest legal one is ``MAX_REPLY`` bytes); more bytes than ``need()``,
a wrong version byte, a method or address type never offered, or a refusal raise
one of the errors below. Errors about the proxy itself subclass ``ProxyError``
(callers stop: no other source can do better through the same proxy); a proxy that
could not reach one destination raises ``ProxyConnectFailed`` (a per-source
failure, like a refused direct connection).
"""

from __future__ import annotations

import ipaddress

from phase_core.errors import (
    ConfigError,
    InputError,
    PhaseError,
    ProtocolViolation,
    TempFailure,
    Timeout,
    Unavailable,
)

VERSION = 5
AUTH_VERSION = 1
NO_AUTH, USER_PASS, NO_ACCEPTABLE = 0x00, 0x02, 0xFF
CMD_CONNECT = 1
ATYP_IPV4, ATYP_DOMAIN, ATYP_IPV6 = 1, 3, 4
MAX_REPLY = 4 + 1 + 255 + 2  # VER REP RSV ATYP, a 255-byte name, the port

REPLIES = {
    0x01: "general failure",
    0x02: "connection not allowed by the proxy's rules",
    0x03: "network unreachable",
    0x04: "host unreachable",
    0x05: "connection refused",
    0x06: "TTL expired",
    0x07: "command not supported",
    0x08: "address type not supported",
}


# -- errors -----------------------------------------------------------------------------

class ProxyError(PhaseError):
    """The proxy itself failed (unreachable, broken, refusing us): no source can succeed."""


class ProxyUnreachable(ProxyError, TempFailure):
    slug = "proxy_unreachable"


class ProxyTimeout(ProxyError, Timeout):
    slug = "proxy_timeout"


class ProxyProtocol(ProxyError, ProtocolViolation):
    slug = "proxy_protocol"


class ProxyAuthFailed(ProxyError, ConfigError):
    slug = "proxy_auth"


class ProxyUnsupported(ProxyError, Unavailable):
    slug = "proxy_unsupported"


class ProxyConnectFailed(TempFailure):
    """The proxy answered, but could not open a connection to this destination."""

    slug = "proxy_connect_failed"


class ProxyConnectRefused(Unavailable):
    """The proxy's rules do not allow this destination (reply 2)."""

    slug = "proxy_connect_refused"


# -- the state machine ------------------------------------------------------------------

def _field(value: bytes, what: str) -> bytes:
    if not 1 <= len(value) <= 255:
        raise InputError(f"the proxy {what} must be 1 to 255 bytes, not {len(value)}")
    return bytes([len(value)]) + value


def encode_address(host: str, port: int) -> bytes:
    """ATYP + DST.ADDR + DST.PORT for a CONNECT request (a name goes as a name)."""
    if not 0 < port < 65536:
        raise InputError(f"port {port} is not between 1 and 65535")
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ip = ipaddress.ip_address(bare)
    except ValueError:
        ip = None
    if isinstance(ip, ipaddress.IPv4Address):
        addr = bytes([ATYP_IPV4]) + ip.packed
    elif isinstance(ip, ipaddress.IPv6Address):
        addr = bytes([ATYP_IPV6]) + ip.packed
    else:
        try:
            name = bare.encode("idna")
        except UnicodeError:
            raise InputError(f"host {host[:80]!r} is not a valid host name") from None
        addr = bytes([ATYP_DOMAIN]) + _field(name, "destination host name")
    return addr + port.to_bytes(2, "big")


class Socks5Client:
    """One CONNECT handshake: greeting → [username/password] → CONNECT → reply."""

    def __init__(self, host: str, port: int, *, username: bytes | None = None,
                 password: bytes | None = None, proxy_name: str = "the proxy") -> None:
        if (username is None) != (password is None):
            raise InputError("a proxy user name needs a password, and a password a user name")
        self.target = f"{host}:{port}"
        self.proxy_name = proxy_name
        self._request = bytes([VERSION, CMD_CONNECT, 0]) + encode_address(host, port)
        self._auth: bytes | None = None
        if username is not None and password is not None:
            self._auth = (bytes([AUTH_VERSION]) + _field(username, "user name")
                          + _field(password, "password"))
        self._method = USER_PASS if self._auth is not None else NO_AUTH
        self._out = bytearray([VERSION, 1, self._method])
        self._state = "method"
        self._buf = bytearray()
        self._want = 2  # bytes in the reply being read (grows once its header is read)
        self._atyp = 0
        self.bound: tuple[int, bytes, int] | None = None  # (atyp, address, port)

    @property
    def done(self) -> bool:
        return self._state == "done"

    def data_to_send(self) -> bytes:
        out, self._out = bytes(self._out), bytearray()
        return out

    def need(self) -> int:
        """How many bytes complete the reply being read (0 when the handshake is done)."""
        return 0 if self.done else self._want - len(self._buf)

    def receive(self, data: bytes) -> None:
        if len(data) > self.need():
            raise self._violation(f"sent {len(data) - self.need()} bytes more than its "
                                  "reply holds")
        self._buf += data
        while not self.done and len(self._buf) == self._want:
            self._step()

    # -- one complete piece of a reply ---------------------------------------------
    def _violation(self, what: str) -> ProxyProtocol:
        return ProxyProtocol(f"{self.proxy_name} {what} (connecting to {self.target})",
                             hint="is it a SOCKS5 proxy? (a SOCKS4 or HTTP proxy answers "
                                  "differently)")

    def _next(self, state: str, want: int) -> None:
        self._state, self._want, self._buf = state, want, bytearray()

    def _step(self) -> None:
        b = self._buf
        if self._state == "method":
            if b[0] != VERSION:
                raise self._violation(f"answered with version {b[0]}, not {VERSION}")
            if b[1] == NO_ACCEPTABLE:
                raise ProxyAuthFailed(
                    f"{self.proxy_name} accepts none of the offered methods "
                    f"({'username/password' if self._auth else 'no authentication'})",
                    hint="give user:password in the proxy URL" if self._auth is None else
                    "check that the proxy takes username/password authentication")
            if b[1] != self._method:
                raise self._violation(f"chose method {b[1]}, which was not offered")
            if self._auth is not None:
                self._out += self._auth
                self._next("auth", 2)
            else:
                self._connect()
        elif self._state == "auth":
            if b[0] != AUTH_VERSION:
                raise self._violation(f"answered the login with version {b[0]}, not 1")
            if b[1] != 0:
                raise ProxyAuthFailed(f"{self.proxy_name} refused the user name and password "
                                      f"(status {b[1]})",
                                      hint="check user:password in the proxy URL")
            self._connect()
        elif self._state == "reply":
            self._reply_head(b)
        elif self._state == "name_length":
            self._next("address", 1 + b[0] + 2)  # the length byte again, the name, the port
            self._buf = bytearray(b)
        else:  # "address": the whole bound address and port are here
            atyp = self._atyp
            addr = bytes(b[1:-2]) if atyp == ATYP_DOMAIN else bytes(b[:-2])
            self.bound = (atyp, addr, int.from_bytes(b[-2:], "big"))
            self._next("done", 0)

    def _connect(self) -> None:
        self._out += self._request
        self._next("reply", 4)

    def _reply_head(self, b: bytearray) -> None:
        if b[0] != VERSION:
            raise self._violation(f"answered CONNECT with version {b[0]}, not {VERSION}")
        rep = b[1]
        if rep != 0:
            why = REPLIES.get(rep, "an unknown failure")
            msg = f"{self.proxy_name} could not connect to {self.target}: {why} (reply {rep})"
            if rep in (0x07, 0x08):
                raise ProxyUnsupported(msg, hint="the proxy must support CONNECT to host "
                                                 "names (remote DNS), as tor does")
            if rep == 0x02:
                raise ProxyConnectRefused(msg)
            raise ProxyConnectFailed(msg)
        if b[2] != 0:
            raise self._violation(f"set the reserved byte to {b[2]}")
        self._atyp = b[3]
        if self._atyp == ATYP_IPV4:
            self._next("address", 4 + 2)
        elif self._atyp == ATYP_IPV6:
            self._next("address", 16 + 2)
        elif self._atyp == ATYP_DOMAIN:
            self._next("name_length", 1)
        else:
            raise self._violation(f"answered with address type {self._atyp}")


__all__ = [
    "MAX_REPLY", "ProxyAuthFailed", "ProxyConnectFailed", "ProxyConnectRefused", "ProxyError",
    "ProxyProtocol", "ProxyTimeout", "ProxyUnreachable", "ProxyUnsupported", "Socks5Client",
    "encode_address",
]
