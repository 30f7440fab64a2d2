"""A connection pool: one authenticated connection per peer, reused for every request."""

from __future__ import annotations

import asyncio
from collections import Counter

from phase_core.aio.quic import Client, Connection, Handler
from phase_core.aio.stream import Limits, Stream
from phase_core.errors import PhaseError, Unavailable
from phase_core.identity import Identity


class Pool:
    """Dial peers through one client endpoint; reuse a live connection per node id.

    A connection is found by the node id it authenticated as, or, when the
    caller does not know the id yet, by the address it was dialled at.
    A closed connection is forgotten and the next request dials again.
    """

    def __init__(self, identity: Identity, limits: Limits | None = None,
                 handler: Handler | None = None) -> None:
        self._client = Client(identity, limits, handler)
        self._by_key: dict[str, Connection] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._closed = False

    @property
    def stats(self) -> Counter[str]:
        return self._client.stats

    def connections(self) -> list[Connection]:
        return list({id(c): c for c in self._by_key.values() if not c.closed}.values())

    async def get(self, host: str, port: int, node_id: str | None = None) -> Connection:
        """A live connection to the peer at ``host:port`` (that must be ``node_id`` if given)."""
        if self._closed:
            raise Unavailable("the connection pool is closed")
        key = node_id if node_id is not None else f"{host}|{port}"
        conn = self._live(key)
        if conn is not None:
            return conn
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            conn = self._live(key)
            if conn is not None:
                return conn
            conn = await self._client.connect(host, port, expected_node_id=node_id)
            self._by_key[key] = conn
            self._by_key.setdefault(conn.peer_id, conn)
            if self._by_key[conn.peer_id].closed:
                self._by_key[conn.peer_id] = conn
            self.stats["pool_dials"] += 1
            return conn

    async def open_stream(self, host: str, port: int, node_id: str | None = None) -> Stream:
        """A new stream to the peer, over the pooled connection (dialling once more if it died)."""
        for attempt in (1, 2):
            conn = await self.get(host, port, node_id)
            try:
                return await conn.open_stream()
            except PhaseError:
                if attempt == 2:
                    raise
                self._drop(conn)
        raise AssertionError("unreachable")  # pragma: no cover

    def _live(self, key: str) -> Connection | None:
        conn = self._by_key.get(key)
        if conn is None:
            return None
        if conn.closed:
            self._drop(conn)
            return None
        self.stats["pool_reused"] += 1
        return conn

    def _drop(self, conn: Connection) -> None:
        for k in [k for k, c in self._by_key.items() if c is conn]:
            del self._by_key[k]

    async def close(self) -> None:
        self._closed = True
        conns = self.connections()
        self._by_key.clear()
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
