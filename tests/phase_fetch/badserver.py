"""A loopback HTTP server that misbehaves on purpose, one behaviour per route.

Written on raw sockets so that every byte on the wire is under the test's
control (lying headers, resets, stalls). Each connection serves one request
and closes. Every request is logged (path and Range header) for assertions.
"""

from __future__ import annotations

import re
import socket
import socketserver
import struct
import threading
import time
from dataclasses import dataclass, field

RANGE_RE = re.compile(r"bytes=(\d+)-")


@dataclass
class Route:
    data: bytes
    mode: str = "ok"
    # ok        honours Range, correct Content-Length
    # wrong     same length, different bytes
    # stall     headers + half the body, then nothing until the client gives up
    # stall_headers  accepts, then never answers
    # reset     headers + half the body, then a TCP reset
    # short_cl  Content-Length of the full size, half the body, then close
    # long_cl   Content-Length larger than the blob
    # extra     no Content-Length, the blob and then extra bytes, then close
    # status    always answers `status`
    # no_range  ignores Range: always 200 and the whole body
    # flaky     the first `fail_times` requests reset mid-body, then ok (resume test)
    # redirect  302 to `location`
    # slow      honours Range, sends `chunk` bytes every `delay_s`
    # gate      like ok, but first waits until `gate` (a Barrier) has all its parties
    # drip_head the response head one byte every `delay_s` (a long head: it never ends)
    # drip      a correct head, then the body one byte every `delay_s`
    # endless   no Content-Length; `chunk`-byte blocks of the blob's bytes, forever
    status: int = 500
    location: str = ""
    fail_times: int = 0
    chunk: int = 65536
    delay_s: float = 0.0
    gate: threading.Barrier | None = None
    served: int = 0
    sent: int = 0  # drip/endless: bytes sent so far
    hung_up: threading.Event = field(default_factory=threading.Event)  # the client left


@dataclass
class Request:
    path: str
    range: str | None


@dataclass
class BadServer:
    routes: dict[str, Route] = field(default_factory=dict)
    log: list[Request] = field(default_factory=list)
    inflight: int = 0
    max_inflight: int = 0

    def __post_init__(self) -> None:
        self.stop = threading.Event()
        self._count = threading.Lock()
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                with outer._count:
                    outer.inflight += 1
                    outer.max_inflight = max(outer.max_inflight, outer.inflight)
                try:
                    outer._handle(self.request)
                finally:
                    with outer._count:
                        outer.inflight -= 1

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> BadServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self._server.shutdown()
        self._server.server_close()

    def requests(self, path: str) -> list[Request]:
        return [r for r in self.log if r.path == path]

    # -- the handler ---------------------------------------------------------------
    def _handle(self, sock: socket.socket) -> None:
        sock.settimeout(10)
        buf = b""
        while b"\r\n\r\n" not in buf:
            got = sock.recv(4096)
            if not got:
                return
            buf += got
        head = buf.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        path = head[0].split(" ")[1]
        headers = {k.strip().lower(): v.strip() for k, v in
                   (h.split(":", 1) for h in head[1:] if ":" in h)}
        rng = headers.get("range")
        self.log.append(Request(path, rng))
        route = self.routes.get(path)
        if route is None:
            self._send(sock, 404, b"not found\n")
            return
        route.served += 1
        try:
            self._serve(sock, route, rng)
        except (BrokenPipeError, ConnectionResetError):
            route.hung_up.set()
        except TimeoutError:
            pass

    def _send(self, sock: socket.socket, status: int, body: bytes,
              extra: dict[str, str] | None = None, length: int | None = None) -> None:
        hdrs = {"Content-Length": str(len(body) if length is None else length),
                "Connection": "close", **(extra or {})}
        self._head(sock, status, hdrs)
        sock.sendall(body)

    def _head(self, sock: socket.socket, status: int, hdrs: dict[str, str]) -> None:
        lines = [f"HTTP/1.1 {status} X"] + [f"{k}: {v}" for k, v in hdrs.items()]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())

    def _serve(self, sock: socket.socket, r: Route, rng: str | None) -> None:
        data, mode = r.data, r.mode
        if mode == "gate":
            assert r.gate is not None
            r.gate.wait(timeout=5)  # BrokenBarrierError (test fails) unless all arrive
            mode = "ok"
        half = len(data) // 2
        if mode in ("drip_head", "drip", "endless"):
            self._drip(sock, r, mode)
            return
        if mode == "flaky":
            mode = "reset" if r.served <= r.fail_times else "ok"
        if mode in ("ok", "slow", "reset") and rng and (m := RANGE_RE.fullmatch(rng)):
            start = int(m.group(1))
            if start >= len(data):
                self._send(sock, 416, b"", {"Content-Range": f"bytes */{len(data)}"})
                return
            body = data[start:]
            self._head(sock, 206, {"Content-Length": str(len(body)), "Connection": "close",
                                   "Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"})
        else:
            body = data
            if mode == "status":
                self._send(sock, r.status, b"nope\n")
                return
            if mode == "redirect":
                self._send(sock, 302, b"", {"Location": r.location})
                return
            if mode == "stall_headers":
                self.stop.wait(10)
                return
            if mode == "long_cl":
                self._send(sock, 200, data + b"junk", length=len(data) + 4)
                return
            if mode == "extra":
                self._head(sock, 200, {"Connection": "close"})
                sock.sendall(data + b"EXTRA" * 1000)
                return
            if mode == "wrong":
                self._send(sock, 200, bytes(b ^ 0xFF for b in data[:16]) + data[16:])
                return
            self._head(sock, 200, {"Content-Length": str(len(data)), "Connection": "close"})
        if mode == "stall":
            sock.sendall(body[:half])
            self.stop.wait(10)
        elif mode == "short_cl":
            sock.sendall(body[:half])
        elif mode == "reset":
            sock.sendall(body[: max(1, len(body) // 2)])
            time.sleep(0.01)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif mode == "slow":
            view = memoryview(body)
            for i in range(0, len(body), r.chunk):
                if self.stop.is_set():
                    return
                sock.sendall(view[i:i + r.chunk])
                time.sleep(r.delay_s)
        else:  # ok, no_range
            sock.sendall(body)

    def _drip(self, sock: socket.socket, r: Route, mode: str) -> None:
        """Send slowly (or forever) until the client hangs up or the server stops."""
        if mode == "drip_head":
            stream = b"HTTP/1.1 200 X\r\nX-Padding: " + b"a" * 100_000
        elif mode == "drip":
            stream = (f"HTTP/1.1 200 X\r\nContent-Length: {len(r.data)}\r\n"
                      "Connection: close\r\n\r\n").encode()
            sock.sendall(stream)
            stream = r.data
        else:
            self._head(sock, 200, {"Connection": "close"})
            stream = b""
        step = 1 if mode != "endless" else r.chunk
        i = 0
        while not self.stop.is_set():
            if mode == "endless":
                block = (r.data * (step // max(1, len(r.data)) + 1))[:step]
            else:
                block = stream[i:i + step]
                if not block:
                    return
            sock.sendall(block)
            r.sent += len(block)
            i += len(block)
            if r.delay_s:
                self.stop.wait(r.delay_s)
