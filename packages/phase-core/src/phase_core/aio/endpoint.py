"""What the connections of one transport endpoint share (no aioquic here; see ``aio.quic``).

An ``Endpoint`` is one listener or one dialling client: its certificate and Noise
key, its counters, and the admission policy for connections and streams:

- the connection table (``max_connections``): when it is full, the oldest
  *unauthenticated* connection is evicted to make room;
- unauthenticated connections, at most ``max_pending_handshakes`` in all and
  ``max_handshakes_per_source`` per source address (oldest evicted);
- ``priority(peer_id)``: peers it favours (plasmd: the keyring) keep reserved
  shares of connections and streams that other peers cannot take;
- the rate-limited log of unauthenticated drops (first one, then one summary
  line per ``SUMMARY_INTERVAL_S``).
"""

from __future__ import annotations

import asyncio
import collections
import os
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from phase_core import log
from phase_core.aio import certs
from phase_core.aio.stream import Limits, Stream
from phase_core.identity import Identity

Handler = Callable[[str, Stream], Awaitable[None]]
Priority = Callable[[str], bool]
SUMMARY_INTERVAL_S = 10.0  # unauthenticated drops are logged as one summary line per interval


class Endpoint:
    """State shared by the connections of one listener or one client pool."""

    def __init__(self, identity: Identity, limits: Limits, handler: Handler | None,
                 role: str, priority: Priority | None = None) -> None:
        self.identity = identity
        self.limits = limits
        self.handler = handler
        self.role = role
        self.priority = priority
        self.cert = certs.make()
        # A fresh Noise static key per endpoint (not derived from the node key):
        # the handshake payload signs it with the node key.
        self.static_secret = os.urandom(32)
        self.stats: Counter[str] = Counter()
        self.protocols: set[Any] = set()
        self.by_peer: dict[str, set[Any]] = {}
        self.active_streams = 0
        self.streams_by_peer: Counter[str] = Counter()
        self.other_connections = 0  # authenticated connections of non-priority peers
        # unauthenticated connections, oldest first, in total and per source address
        self.pending: collections.OrderedDict[Any, None] = collections.OrderedDict()
        self.by_source: dict[str, collections.OrderedDict[Any, None]] = {}
        self._summary: Counter[str] = Counter()
        self._summary_timer: asyncio.TimerHandle | None = None
        self._priority_failed = False

    def is_priority(self, peer: str) -> bool:
        """Whether ``peer`` gets the reserved share (every peer, without a callback)."""
        if self.priority is None:
            return True
        try:
            return bool(self.priority(peer))
        except Exception as e:  # a bug in the callback must not take the endpoint down
            if not self._priority_failed:
                self._priority_failed = True
                log.get().error("net.priority_failed", error=repr(e))
            return False

    # -- unauthenticated connections ---------------------------------------------

    def admit(self, proto: Any) -> bool:
        """A new connection: room is made by evicting the oldest unauthenticated one."""
        if len(self.protocols) >= self.limits.max_connections or (
                not proto.is_client and len(self.pending) >= self.limits.max_pending_handshakes):
            if not self.pending:
                return False
            next(iter(self.pending)).evict("too many connections in handshake")
        self.protocols.add(proto)
        if not proto.is_client:
            self.pending[proto] = None
        return True

    def sourced(self, proto: Any, source: str) -> None:
        """The first datagram told us where an unauthenticated connection comes from."""
        if proto not in self.pending:
            return
        same = self.by_source.setdefault(source, collections.OrderedDict())
        same[proto] = None
        if len(same) > self.limits.max_handshakes_per_source:
            next(iter(same)).evict("too many handshakes from this address")

    def settled(self, proto: Any) -> None:
        """``proto`` is no longer an unauthenticated connection (authenticated or gone)."""
        if self.pending.pop(proto, 0) is None and proto.addr is not None:
            src = str(proto.addr[0])
            same = self.by_source.get(src)
            if same is not None:
                same.pop(proto, None)
                if not same:
                    del self.by_source[src]

    # -- rate-limited logging of unauthenticated drops -----------------------------

    def summarize(self, slug: str, first: Callable[[], None] | None = None) -> None:
        """A dropped unauthenticated connection: the first of an interval is logged
        by ``first()`` (if given), the rest are counted into one summary line."""
        if self._summary_timer is None:
            self._summary_timer = asyncio.get_running_loop().call_later(
                SUMMARY_INTERVAL_S, self.flush_summary)
            if first is not None:
                first()
                return
        self._summary[slug] += 1

    def flush_summary(self) -> None:
        if self._summary_timer is not None:
            self._summary_timer.cancel()
            self._summary_timer = None
        if self._summary:
            counts, self._summary = dict(self._summary), Counter()
            log.get().warning("net.handshakes_dropped", role=self.role,
                              total=sum(counts.values()), counts=counts,
                              interval_s=SUMMARY_INTERVAL_S)


    def authenticated(self, proto: Any) -> None:
        assert proto.peer_id is not None
        self.settled(proto)
        self.by_peer.setdefault(proto.peer_id, set()).add(proto)
        if not proto.priority:
            self.other_connections += 1

    def forget(self, proto: Any) -> None:
        self.protocols.discard(proto)
        self.settled(proto)
        self.leaving(proto)

    def leaving(self, proto: Any) -> None:
        """``proto``'s peer has closed it: it no longer counts against the peer's share
        (its memory still counts in ``protocols`` until it is gone)."""
        if proto.peer_id is not None:
            peers = self.by_peer.get(proto.peer_id)
            if peers is not None and proto in peers:
                peers.discard(proto)
                if not proto.priority:
                    self.other_connections -= 1
                if not peers:
                    del self.by_peer[proto.peer_id]
