"""A loopback SOCKS5 proxy that misbehaves on purpose, one behaviour per instance.

Raw sockets, so every byte on the wire is the test's. It never connects anywhere:
each connection reads the client's greeting (and login, and CONNECT) and answers
according to ``mode``. Each request it saw is kept in ``requests`` for assertions.

    bad_version     answers the greeting with version 4 (a SOCKS4 proxy)
    http            answers like an HTTP server ("HTTP/1.1 400 ...")
    oversize        a valid CONNECT reply followed by 64 KiB of garbage
    silent          reads the greeting, then says nothing until the client gives up
    drip            the method reply, then the CONNECT reply one byte per ``delay_s``
                    (the whole handshake never fits the client's timeout)
    close           closes the connection after half a CONNECT reply
    auth_refused    asks for username/password, then refuses it
    no_method       accepts none of the offered methods (0xFF)
    refused         CONNECT answered with reply 5, connection refused
    no_names        CONNECT answered with reply 8, address type not supported
"""

from __future__ import annotations

import socket
import threading
from typing import Any

OK_REPLY = bytes([5, 0, 0, 1, 127, 0, 0, 1, 0, 80])


def _read(conn: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        got = conn.recv(n - len(buf))
        if not got:
            raise ConnectionError("client went away")
        buf += got
    return buf


class HostileSocks:
    def __init__(self, mode: str, delay_s: float = 0.2) -> None:
        self.mode = mode
        self.delay_s = delay_s
        self.requests: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.1)
        self.port = self._sock.getsockname()[1]
        self.url = f"socks5h://127.0.0.1:{self.port}"
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> HostileSocks:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        for c in self._conns:
            c.close()
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            self._conns.append(conn)
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        try:
            self._handshake(conn)
        except (ConnectionError, OSError):
            pass

    def _handshake(self, conn: socket.socket) -> None:
        mode = self.mode
        ver, n = _read(conn, 2)
        methods = _read(conn, n)
        req: dict[str, Any] = {"version": ver, "methods": list(methods)}
        self.requests.append(req)
        if mode == "bad_version":
            conn.sendall(bytes([4, 0]))
            return
        if mode == "http":
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            return
        if mode == "silent":
            self._stop.wait(30)
            return
        if mode == "no_method":
            conn.sendall(bytes([5, 0xFF]))
            return
        if mode == "auth_refused":
            conn.sendall(bytes([5, 2]))
            _, ulen = _read(conn, 2)
            req["username"] = _read(conn, ulen)
            (plen,) = _read(conn, 1)
            req["password"] = _read(conn, plen)
            conn.sendall(bytes([1, 1]))
            return
        conn.sendall(bytes([5, 0]))
        _, cmd, _, atyp = _read(conn, 4)
        if atyp == 3:
            (ln,) = _read(conn, 1)
            req["host"] = _read(conn, ln).decode()
        else:
            req["host"] = _read(conn, 4 if atyp == 1 else 16)
        req["port"] = int.from_bytes(_read(conn, 2), "big")
        req["atyp"], req["cmd"] = atyp, cmd
        if mode == "oversize":
            conn.sendall(OK_REPLY + b"\xee" * 65536)
        elif mode == "drip":
            for b in OK_REPLY:
                if self._stop.wait(self.delay_s):
                    return
                conn.sendall(bytes([b]))
        elif mode == "close":
            conn.sendall(OK_REPLY[:5])
            conn.shutdown(socket.SHUT_RDWR)
        elif mode == "refused":
            conn.sendall(bytes([5, 5, 0, 1, 0, 0, 0, 0, 0, 0]))
        elif mode == "no_names":
            conn.sendall(bytes([5, 8, 0, 1, 0, 0, 0, 0, 0, 0]))
        else:
            raise ValueError(f"unknown mode {mode}")


def closed_port() -> int:
    """A loopback port with nothing listening (bound, then closed)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port: int = s.getsockname()[1]
    s.close()
    return port


def microsocks_or_skip() -> str:
    """Debian's microsocks (.ci/apt-packages.txt): missing is a skip, under CI a failure."""
    import os
    import shutil

    import pytest

    path = shutil.which("microsocks")
    if path is None:
        msg = "microsocks is not installed (apt-get install microsocks)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg + "; CI must run the proxy tests")
        pytest.skip(msg)
    return path


def wait_listening(host: str, port: int, proc: Any, tries: int = 200) -> None:
    """Until something accepts on host:port (or ``proc`` died): polls, bounded."""
    import time

    for _ in range(tries):
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {host}:{port}")


class Microsocks:
    """microsocks on loopback (or, with ``prefix``, e.g. inside ``ip netns exec NS``)."""

    def __init__(self, ip: str = "127.0.0.1", port: int | None = None,
                 prefix: tuple[str, ...] = (), user: str | None = None) -> None:
        import subprocess

        exe = microsocks_or_skip()
        self.ip, self.port = ip, port or closed_port()
        argv = [*prefix, exe, "-i", ip, "-p", str(self.port)]
        if user is not None:
            name, password = user.split(":", 1)
            argv += ["-u", name, "-P", password]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        self.url = f"socks5h://{ip}:{self.port}"

    def __enter__(self) -> Microsocks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.kill()
        self.proc.wait()
