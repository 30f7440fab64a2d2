"""HTTP(S) mirrors: one ``Source`` per mirror URL.

Per attempt: connect timeout (the TLS handshake included, as a whole), read
timeout (per read: a stall of that long fails the attempt; the status line and
headers must all arrive within it, so a
server dripping a byte at a time cannot hold a request open), a minimum body
rate (at least ``min_rate_bps`` × ``read_timeout_s`` bytes in every
``read_timeout_s`` window), ``Range`` resume from ``sink.offset``, Content-Length and
Content-Range checked against the expected size before any body byte, reads
capped so the first byte past the expected size aborts, redirects bounded
(http↔https only, never https→http), TLS verified with the system trust store.

Retry policy: transient failures (timeouts, resets, truncated bodies, 408/429/5xx,
a bad Content-Range) are retried up to ``retries`` times with exponential
backoff and full jitter (``uniform(0, min(cap, base·2^n))``); each retry
resumes from the bytes held. 404/410, other 4xx, TLS failures, a wrong size and
wrong bytes are not retried: the fetcher moves to the next source. Every
attempt and retry of one source shares one deadline (``source_timeout_s``):
when it passes, the source has failed (``source_deadline``) and the fetcher
moves on. URLs in logs and errors go through ``redact`` (no credentials, no
query string).

Through a proxy (``HttpOptions.proxy``, ``--proxy=socks5h://...``) every connection,
redirects included, is a SOCKS5 tunnel that carries the mirror's host name to the
proxy (nothing is resolved here); the handshake counts against the connect timeout.
A failure of the proxy itself (``ProxyError``: unreachable, refusing, broken) is
raised as it is: no other mirror can do better through the same proxy.
"""

from __future__ import annotations

import http.client
import random
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from phase_core import log
from phase_core.cas import CHUNK
from phase_core.errors import (
    DigestMismatch,
    PhaseError,
    ProtocolViolation,
    TempFailure,
    Timeout,
    Unavailable,
)
from phase_core.proxy import Proxy, open_tunnel
from phase_fetch import __version__
from phase_fetch.sources import Sink
from phase_fetch.want import Want, blob_url, redact

USER_AGENT = f"phase-fetch/{__version__}"
TEMP_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
REDIRECTS = frozenset({301, 302, 303, 307, 308})
CONTENT_RANGE_RE = re.compile(r"bytes (\d{1,19})-(\d{1,19})/(\d{1,19}|\*)")


@dataclass(frozen=True)
class HttpOptions:
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 30.0
    retries: int = 3
    backoff_s: float = 0.5
    backoff_max_s: float = 8.0
    max_redirects: int = 5
    min_rate_bps: int = 1024
    source_timeout_s: float = 3600.0
    proxy: Proxy | None = None


class _Watchdog:
    """Shuts a socket down when a deadline passes, so a blocked read returns at once.

    Per-read timeouts cannot stop a server that sends one byte just before each
    timeout; this bounds the whole response head and the whole source.
    """

    def __init__(self) -> None:
        self.fired: str | None = None
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    def arm(self, sock: socket.socket | None, at: float, why: str) -> None:
        self.disarm()
        self.fired = None
        if sock is None:
            return

        def fire() -> None:
            with self._lock:
                self.fired = why
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        self._timer = threading.Timer(max(0.0, at - time.monotonic()), fire)
        self._timer.daemon = True
        self._timer.start()

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _tcp(conn: http.client.HTTPConnection, proxy: Proxy | None) -> None:
    """The TCP connection: direct, or a SOCKS5 tunnel to the same host name and port."""
    if proxy is None:
        http.client.HTTPConnection.connect(conn)
        return
    timeout = conn.timeout if isinstance(conn.timeout, float | int) else 10.0
    conn.sock = open_tunnel(proxy, conn.host, conn.port, timeout)
    conn.sock.settimeout(timeout)
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _HttpConnection(http.client.HTTPConnection):
    def __init__(self, host: str, port: int | None, *, timeout: float,
                 proxy: Proxy | None) -> None:
        super().__init__(host, port, timeout=timeout)
        self._proxy = proxy

    def connect(self) -> None:
        _tcp(self, self._proxy)


class _HttpsConnection(http.client.HTTPSConnection):
    """HTTPS whose TLS handshake the watchdog can cut short (a server may drip it)."""

    def __init__(self, host: str, port: int | None, *, timeout: float,
                 context: ssl.SSLContext, watchdog: _Watchdog, by: float,
                 proxy: Proxy | None) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._tls = context
        self._wd, self._by = watchdog, by
        self._proxy = proxy

    def connect(self) -> None:
        _tcp(self, self._proxy)  # TCP (or the tunnel) only; the handshake under watch
        self._wd.arm(self.sock, self._by, "connect")
        self.sock = self._tls.wrap_socket(self.sock, server_hostname=self.host)


class HttpMirror:
    """A ``Source`` for one mirror (a base URL or a ``{hex}`` template)."""

    def __init__(self, mirror: str, options: HttpOptions | None = None, *,
                 rng: random.Random | None = None,
                 cancel: threading.Event | None = None) -> None:
        self.mirror = mirror
        self.name = redact(mirror)
        self.opts = options or HttpOptions()
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not crypto
        self._cancel = cancel or threading.Event()

    def fetch(self, want: Want, sink: Sink) -> None:
        url = blob_url(self.mirror, want.id, want.name)
        deadline = time.monotonic() + self.opts.source_timeout_s
        attempt = 0
        while True:
            try:
                self._attempt(url, want, sink, deadline)
                return
            except TempFailure as e:
                if attempt >= self.opts.retries or e.slug == "source_deadline":
                    raise
                delay = self._rng.uniform(0, min(self.opts.backoff_max_s,
                                                 self.opts.backoff_s * 2 ** attempt))
                delay = min(delay, max(0.0, deadline - time.monotonic()))
                attempt += 1
                log.get().info("fetch.retry", id=want.id, source=self.name, attempt=attempt,
                               error=e.slug, message=e.message, offset_bytes=sink.offset,
                               delay_ms=int(delay * 1000))
                if self._cancel.wait(delay):
                    raise

    # -- one attempt --------------------------------------------------------------
    def _attempt(self, url: str, want: Want, sink: Sink, deadline: float) -> None:
        if want.size is not None and sink.offset == want.size:
            return  # every byte is already here; the fetcher checks them
        self._check_deadline(deadline, url)
        offset = sink.offset
        wd = _Watchdog()
        try:
            conn, resp, final_url = self._open(url, offset, deadline, wd)
            try:
                offset = self._check_head(resp, want, sink, offset, final_url)
                self._read_body(resp, want, sink, final_url, deadline, wd)
            finally:
                conn.close()
        finally:
            wd.disarm()

    def _check_deadline(self, deadline: float, url: str) -> None:
        if time.monotonic() >= deadline:
            raise self._deadline_error(url)

    def _deadline_error(self, url: str) -> Timeout:
        return Timeout(f"{redact(url)}: no complete blob within {self.opts.source_timeout_s:g} "
                       "s; trying the next source", slug="source_deadline",
                       hint="raise --source-timeout for a slow but honest mirror")

    def _open(self, url: str, offset: int, deadline: float, wd: _Watchdog
              ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse, str]:
        for _ in range(self.opts.max_redirects + 1):
            parts = urlsplit(url)
            conn = self._connect(parts.scheme, parts.hostname or "", parts.port, deadline, wd)
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity",
                       "Accept": "*/*"}
            if offset:
                headers["Range"] = f"bytes={offset}-"
            # the whole response head within one read timeout (and the source's deadline)
            head_by = min(time.monotonic() + self.opts.read_timeout_s, deadline)
            sock = conn.sock  # getresponse() drops conn.sock when the server will close
            wd.arm(sock, head_by, "source" if head_by == deadline else "head")
            try:
                conn.request("GET", path, headers=headers)
                resp = conn.getresponse()
            except BaseException as e:
                conn.close()
                if wd.fired == "head":
                    raise Timeout(f"{redact(url)}: the response head did not arrive within "
                                  f"{self.opts.read_timeout_s:g} s") from None
                if wd.fired == "source":
                    raise self._deadline_error(url) from None
                raise _translate(e, url) from None
            wd.arm(sock, deadline, "source")
            if resp.status not in REDIRECTS:
                return conn, resp, url
            location = resp.getheader("Location")
            conn.close()
            if not location:
                raise ProtocolViolation(f"{redact(url)}: redirect {resp.status} without a Location")
            new = urljoin(url, location)
            scheme = urlsplit(new).scheme
            if scheme not in ("http", "https"):
                raise Unavailable(f"{redact(url)} redirects to a {scheme or 'relative'} URL",
                                  slug="bad_redirect")
            if parts.scheme == "https" and scheme == "http":
                raise Unavailable(f"{redact(url)} redirects from https to http; refused",
                                  slug="bad_redirect")
            log.get().debug("fetch.redirect", source=self.name, to=redact(new), status=resp.status)
            url = new
        raise Unavailable(f"{self.name}: more than {self.opts.max_redirects} redirects",
                          slug="too_many_redirects")

    def _connect(self, scheme: str, host: str, port: int | None, deadline: float,
                 wd: _Watchdog) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection
        timeout = max(0.001, min(self.opts.connect_timeout_s, deadline - time.monotonic()))
        if scheme == "https":
            by = min(time.monotonic() + self.opts.connect_timeout_s, deadline)
            conn = _HttpsConnection(host, port, timeout=timeout,
                                    context=ssl.create_default_context(), watchdog=wd, by=by,
                                    proxy=self.opts.proxy)
        else:
            conn = _HttpConnection(host, port, timeout=timeout, proxy=self.opts.proxy)
        where = f"{scheme}://{host}:{port or ''}"
        try:
            conn.connect()
            wd.disarm()
            assert conn.sock is not None
            conn.sock.settimeout(self.opts.read_timeout_s)
        except BaseException as e:
            conn.close()
            if wd.fired == "connect":
                raise Timeout(f"{where}: the TLS handshake did not complete within "
                              f"{self.opts.connect_timeout_s:g} s") from None
            raise _translate(e, where, connecting=True) from None
        return conn

    def _check_head(self, resp: http.client.HTTPResponse, want: Want, sink: Sink,
                    offset: int, url: str) -> int:
        status = resp.status
        if status == 200:
            if offset:
                log.get().info("fetch.range_ignored", id=want.id, source=self.name,
                               offset_bytes=offset)
                sink.restart()
                offset = 0
        elif status == 206:
            self._check_content_range(resp, want, sink, offset, url)
        elif status == 416:
            sink.restart()
            raise TempFailure(f"{redact(url)}: range {offset}- not satisfiable; restarting "
                              "from zero", slug="bad_range")
        elif status in (404, 410):
            raise Unavailable(f"{redact(url)}: {status} {resp.reason}", slug="not_found")
        elif status in TEMP_STATUSES or 500 <= status < 600:
            raise TempFailure(f"{redact(url)}: {status} {resp.reason}", slug="http_status",
                              status=status)
        else:
            raise Unavailable(f"{redact(url)}: {status} {resp.reason}", slug="http_status",
                              status=status)
        lengths = set(resp.headers.get_all("Content-Length") or [])
        if len(lengths) > 1:
            raise ProtocolViolation(f"{redact(url)}: conflicting Content-Length headers")
        length = resp.length  # None when chunked or absent
        if length is not None:
            total = offset + length
            if want.size is not None and total != want.size:
                raise DigestMismatch(f"{redact(url)} announces {total} bytes, expected {want.size}",
                                     slug="size_mismatch", expected_size=want.size,
                                     announced_bytes=total)
            if total > sink.max_bytes:
                raise DigestMismatch(f"{redact(url)} announces {total} bytes, over the cap of "
                                     f"{sink.max_bytes}", slug="too_large")
            sink.announced_size = total  # progress shows a total and an ETA
        return offset

    def _check_content_range(self, resp: http.client.HTTPResponse, want: Want, sink: Sink,
                             offset: int, url: str) -> None:
        m = CONTENT_RANGE_RE.fullmatch((resp.getheader("Content-Range") or "").strip())
        ok = m is not None and int(m.group(1)) == offset
        if m is not None and ok:
            end = int(m.group(2))
            total = None if m.group(3) == "*" else int(m.group(3))
            if total is not None and end != total - 1:
                ok = False
            if want.size is not None and total is not None and total != want.size:
                raise DigestMismatch(f"{redact(url)} says the blob is {total} bytes, expected "
                                     f"{want.size}", slug="size_mismatch")
            if total is not None and total <= sink.max_bytes:
                sink.announced_size = total
        if not ok:
            sink.restart()
            raise TempFailure(f"{redact(url)}: Content-Range does not answer 'bytes={offset}-'; "
                              "restarting from zero", slug="bad_range")

    def _read_body(self, resp: http.client.HTTPResponse, want: Want, sink: Sink,
                   url: str, deadline: float, wd: _Watchdog) -> None:
        """Stream the body into the sink, a read at a time (a stall loses no byte read)."""
        limit = want.size if want.size is not None else sink.max_bytes
        rate = _RateFloor(self.opts.min_rate_bps, self.opts.read_timeout_s)
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        # Content-Length bodies are read straight from the buffered socket: one recv per
        # read, so the bytes that arrived before a stall or a reset are kept for a resume.
        left = None if resp.chunked else resp.length
        fp = resp.fp
        try:
            while True:
                if self._cancel.is_set():
                    raise TempFailure("cancelled", slug="cancelled")
                # one byte more than the blob can hold, so the first extra byte aborts
                ask = min(CHUNK, limit - sink.offset + 1)
                if left is not None:
                    ask = min(ask, left)
                if ask <= 0:
                    break
                if resp.chunked:
                    data = resp.read1(ask)
                    n = len(data)
                    view[:n] = data
                else:
                    n = fp.readinto1(view[:ask])
                if not n:
                    break
                if left is not None:
                    left -= n
                sink.write(view[:n])
                if time.monotonic() >= deadline:
                    raise self._deadline_error(url)
                if rate.too_slow(n):
                    raise Timeout(f"{redact(url)}: the body came at under "
                                  f"{self.opts.min_rate_bps} bytes/s for "
                                  f"{self.opts.read_timeout_s:g} s (after {sink.offset} bytes)",
                                  slug="too_slow", got_bytes=sink.offset,
                                  hint="lower --min-rate for a slow but honest mirror")
        except PhaseError:
            raise
        except BaseException as e:
            if wd.fired == "source":
                raise self._deadline_error(url) from None
            raise _translate(e, url, got=sink.offset) from None
        if wd.fired == "source":  # the shutdown can look like a clean end of the body
            raise self._deadline_error(url)
        if left:
            raise TempFailure(f"{redact(url)}: the body ended after {sink.offset} bytes, "
                              f"{left} short of its Content-Length", slug="short_body",
                              got_bytes=sink.offset)
        if want.size is not None and sink.offset < want.size:
            raise TempFailure(f"{redact(url)}: the body ended after {sink.offset} of "
                              f"{want.size} bytes", slug="short_body", got_bytes=sink.offset)


class _RateFloor:
    """True once a whole window of ``window_s`` brought fewer than rate × window bytes."""

    def __init__(self, min_rate_bps: int, window_s: float) -> None:
        self.need = min_rate_bps * window_s
        self.window_s = window_s
        self.start = time.monotonic()
        self.got = 0

    def too_slow(self, n: int) -> bool:
        if self.need <= 0:
            return False
        self.got += n
        now = time.monotonic()
        if now - self.start < self.window_s:
            return False
        slow = self.got < self.need
        self.start, self.got = now, 0
        return slow


def _translate(e: BaseException, url: str, *, connecting: bool = False,
               got: int | None = None) -> BaseException:
    """Our error for an exception of socket, ssl or http.client."""
    where = redact(url) + (f" after {got} bytes" if got is not None else "")
    if isinstance(e, PhaseError | KeyboardInterrupt | SystemExit | MemoryError):
        return e
    if isinstance(e, TimeoutError | socket.timeout):
        what = "connecting" if connecting else "reading (the server stalled)"
        return Timeout(f"{where}: timed out {what}")
    if isinstance(e, ssl.SSLCertVerificationError):
        return Unavailable(f"{where}: TLS certificate not trusted: {e.verify_message}",
                           slug="tls_verify_failed", hint="the mirror's certificate must chain "
                           "to the system trust store")
    if isinstance(e, socket.gaierror):
        return Unavailable(f"{where}: cannot resolve host: {e.strerror}", slug="dns")
    if isinstance(e, http.client.IncompleteRead):
        return TempFailure(f"{where}: the body ended early", slug="short_body")
    if isinstance(e, ConnectionError):
        return TempFailure(f"{where}: {type(e).__name__}", slug="connection")
    if isinstance(e, http.client.HTTPException):
        return TempFailure(f"{where}: bad HTTP response ({type(e).__name__})",
                           slug="bad_response")
    if isinstance(e, OSError):
        return TempFailure(f"{where}: {e.strerror or type(e).__name__}", slug="network")
    return e


