"""The SOCKS5 client handshake in memory (sans-I/O): bytes in, bytes out, errors.

Each test plays the proxy's side byte for byte as RFC 1928/1929 write it, then breaks
one thing and expects the error that names it.
"""

from __future__ import annotations

import pytest

from phase_core import exitcodes
from phase_core.errors import InputError
from phase_core.protocol.socks5 import (
    MAX_REPLY,
    ProxyAuthFailed,
    ProxyConnectFailed,
    ProxyConnectRefused,
    ProxyError,
    ProxyProtocol,
    ProxyUnsupported,
    Socks5Client,
    encode_address,
)

OK_V4 = bytes([5, 0, 0, 1, 10, 0, 0, 1, 0x1F, 0x90])


def feed(c: Socks5Client, data: bytes) -> None:
    """Give the client exactly what it asks for, piece by piece, as an adapter would."""
    while data:
        n = c.need()
        assert n > 0, "the client wants nothing more, yet the proxy has more to say"
        c.receive(data[:n])
        data = data[n:]


def test_no_auth_connect_sends_the_host_name_not_an_address() -> None:
    c = Socks5Client("mirror.example", 8080)
    assert c.data_to_send() == bytes([5, 1, 0])  # version 5, one method: no authentication
    assert c.need() == 2
    c.receive(bytes([5, 0]))
    name = b"mirror.example"
    assert c.data_to_send() == bytes([5, 1, 0, 3, len(name)]) + name + (8080).to_bytes(2, "big")
    assert not c.done
    feed(c, OK_V4)
    assert c.done and c.need() == 0
    assert c.bound == (1, bytes([10, 0, 0, 1]), 8080)
    assert c.data_to_send() == b""


def test_username_password_login() -> None:
    c = Socks5Client("h", 80, username=b"alice", password=b"s3cret")
    assert c.data_to_send() == bytes([5, 1, 2])  # only username/password is offered
    c.receive(bytes([5, 2]))
    assert c.data_to_send() == b"\x01\x05alice\x06s3cret"
    c.receive(bytes([1, 0]))
    assert c.data_to_send()[:4] == bytes([5, 1, 0, 3])
    feed(c, OK_V4)
    assert c.done


@pytest.mark.parametrize("host,port,expected", [
    ("10.1.2.3", 80, bytes([1, 10, 1, 2, 3, 0, 80])),
    ("[::1]", 443, bytes([4]) + bytes(15) + b"\x01" + (443).to_bytes(2, "big")),
    ("::1", 443, bytes([4]) + bytes(15) + b"\x01" + (443).to_bytes(2, "big")),
    ("bücher.example", 1, bytes([3, 21]) + b"xn--bcher-kva.example" + b"\x00\x01"),
])
def test_address_encoding(host: str, port: int, expected: bytes) -> None:
    assert encode_address(host, port) == expected


def test_bound_address_as_a_name_of_any_length_up_to_the_cap() -> None:
    c = Socks5Client("h", 80)
    c.data_to_send()
    c.receive(bytes([5, 0]))
    reply = bytes([5, 0, 0, 3, 255]) + b"n" * 255 + b"\x00\x50"
    assert len(reply) == MAX_REPLY
    feed(c, reply)
    assert c.done and c.bound == (3, b"n" * 255, 80)


def test_a_reply_is_read_exactly_never_past_its_end() -> None:
    c = Socks5Client("h", 80)
    c.receive(bytes([5, 0]))
    c.receive(bytes([5, 0, 0, 4]))
    assert c.need() == 18  # an IPv6 address and a port, nothing more
    with pytest.raises(ProxyProtocol, match="19 bytes more"):
        c.receive(bytes(18 + 19))


@pytest.mark.parametrize("replies,error,match", [
    ([bytes([4, 0])], ProxyProtocol, "version 4"),                       # a SOCKS4 proxy
    ([b"HT"], ProxyProtocol, "version 72"),                              # an HTTP server
    ([bytes([5, 0xFF])], ProxyAuthFailed, "none of the offered methods"),
    ([bytes([5, 2])], ProxyProtocol, "method 2, which was not offered"),
    ([bytes([5, 0]), bytes([6, 0, 0, 1])], ProxyProtocol, "version 6"),
    ([bytes([5, 0]), bytes([5, 0, 1, 1])], ProxyProtocol, "reserved byte"),
    ([bytes([5, 0]), bytes([5, 0, 0, 9])], ProxyProtocol, "address type 9"),
    ([bytes([5, 0]), bytes([5, 5, 0, 1])], ProxyConnectFailed, "connection refused"),
    ([bytes([5, 0]), bytes([5, 4, 0, 1])], ProxyConnectFailed, "host unreachable"),
    ([bytes([5, 0]), bytes([5, 0x7A, 0, 1])], ProxyConnectFailed, "unknown failure"),
    ([bytes([5, 0]), bytes([5, 2, 0, 1])], ProxyConnectRefused, "not allowed"),
    ([bytes([5, 0]), bytes([5, 8, 0, 1])], ProxyUnsupported, "address type not supported"),
])
def test_bad_replies(replies: list[bytes], error: type[Exception], match: str) -> None:
    c = Socks5Client("mirror.example", 80, proxy_name="the proxy P")
    with pytest.raises(error, match=match) as info:
        for r in replies:
            c.receive(r)
    assert "mirror.example:80" in str(info.value) or isinstance(info.value, ProxyAuthFailed)


def test_login_refused_and_bad_login_reply() -> None:
    c = Socks5Client("h", 80, username=b"u", password=b"p")
    c.receive(bytes([5, 2]))
    with pytest.raises(ProxyAuthFailed, match="refused the user name and password") as info:
        c.receive(bytes([1, 1]))
    assert info.value.exit_code == exitcodes.CONFIG and info.value.slug == "proxy_auth"
    c = Socks5Client("h", 80, username=b"u", password=b"p")
    c.receive(bytes([5, 2]))
    with pytest.raises(ProxyProtocol, match="login with version 5"):
        c.receive(bytes([5, 0]))


def test_error_classes_carry_slugs_and_exit_codes() -> None:
    cases = {ProxyProtocol: ("proxy_protocol", exitcodes.PROTOCOL),
             ProxyAuthFailed: ("proxy_auth", exitcodes.CONFIG),
             ProxyUnsupported: ("proxy_unsupported", exitcodes.UNAVAILABLE),
             ProxyConnectFailed: ("proxy_connect_failed", exitcodes.TEMPFAIL),
             ProxyConnectRefused: ("proxy_connect_refused", exitcodes.UNAVAILABLE)}
    for cls, (slug, code) in cases.items():
        e = cls("x")
        assert (e.slug, e.exit_code) == (slug, code)
    # a failure to reach one destination is not the proxy's fault: the next source may work
    assert not issubclass(ProxyConnectFailed, ProxyError)
    assert issubclass(ProxyProtocol, ProxyError)


@pytest.mark.parametrize("kwargs", [
    {"host": "h", "port": 0}, {"host": "h", "port": 65536}, {"host": "x" * 256, "port": 1},
    {"host": "h", "port": 1, "username": b"u"},
    {"host": "h", "port": 1, "username": b"", "password": b"p"},
    {"host": "h", "port": 1, "username": b"u", "password": b"p" * 256},
])
def test_bad_requests_are_refused_before_any_byte(kwargs: dict[str, object]) -> None:
    with pytest.raises(InputError):
        Socks5Client(**kwargs)  # type: ignore[arg-type]
