"""An HTTP server with a thread per connection, a cap on connections and timeouts.

``http.server.ThreadingHTTPServer`` starts a thread for every accepted connection
and keeps it for as long as the client keeps the socket open: a thousand idle
sockets are a thousand threads. Here:

- every recv and send on a connection times out after ``IO_TIMEOUT_S`` seconds;
- at most ``max_connections`` connections (and so handler threads) exist at once;
- a connection that has not delivered a complete request line and headers is
  *idle*. When the cap is reached, the oldest idle connection is shut down to make
  room for the new one (its thread sees end-of-file and ends); when every
  connection is in the middle of a request, the new one is closed at once.

So idle or slow clients cannot hold the server's threads, and an honest request
always finds a slot unless ``max_connections`` requests are being served.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from phase_core import log

MAX_CONNECTIONS = 64
IO_TIMEOUT_S = 30.0


class BoundedHandler(BaseHTTPRequestHandler):
    server: BoundedHTTPServer
    timeout = IO_TIMEOUT_S  # set on the socket by StreamRequestHandler.setup

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        finally:
            self.server.set_busy(self.connection, False)

    def parse_request(self) -> bool:
        ok = super().parse_request()
        if ok:  # a whole request has arrived: no longer idle until it is answered
            self.server.set_busy(self.connection, True)
        return ok


class BoundedHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], handler: type[BoundedHandler],
                 max_connections: int = MAX_CONNECTIONS) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.max_connections = max_connections
        self._conns: dict[Any, bool] = {}  # socket -> busy; insertion order = oldest first
        self._conn_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Admit the connection under the cap (closing the oldest idle one if needed)."""
        victim = None
        with self._conn_lock:
            if len(self._conns) >= self.max_connections:
                victim = next((c for c, busy in self._conns.items() if not busy), None)
                if victim is None:
                    log.get().debug("http.connection_refused", client=str(client_address[0]),
                                   reason="every connection is serving a request")
                    refuse = True
                else:
                    del self._conns[victim]
                    refuse = False
            else:
                refuse = False
            if not refuse:
                self._conns[request] = False
        if refuse:
            super().shutdown_request(request)
            return
        if victim is not None:
            log.get().debug("http.idle_connection_closed")
            with contextlib.suppress(OSError):
                victim.shutdown(socket.SHUT_RDWR)  # its thread reads EOF and ends
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conn_lock:
            self._conns.pop(request, None)
        super().shutdown_request(request)

    def set_busy(self, conn: Any, busy: bool) -> None:
        with self._conn_lock:
            if conn in self._conns:
                self._conns[conn] = busy

    @property
    def connections(self) -> int:
        with self._conn_lock:
            return len(self._conns)
