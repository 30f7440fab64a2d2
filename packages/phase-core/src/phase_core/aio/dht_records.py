"""The record side of ``DhtService`` (aio/dht.py): put, get and our own node record.

A mixin: ``DhtService`` supplies the requests and lookups (``_request``,
``_lookup``, ``lookup_nodes``) and the state named below. Every check on a record
is made in ``protocol/dht_store.py``; a holder that serves a forged record is
distrusted by the lookup (``Lookup.on_bad``) and penalized in the routing table.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any

from phase_core import envelope, log, records
from phase_core.errors import PhaseError
from phase_core.identity import Identity
from phase_core.protocol import dht_node
from phase_core.protocol.dht import Contact, key_id, node_key, split_address
from phase_core.protocol.dht_lookup import Lookup
from phase_core.protocol.dht_node import AddressObserver, Answer, DhtNode
from phase_core.protocol.dht_store import (
    Collector,
    Republisher,
    Value,
    implied_keys,
    last_id,
    record_keys,
    verify_value,
)
from phase_core.trust import Keyring

MAX_PAGES = 8  # dht_get pages followed per holder


class RecordsMixin:
    identity: Identity
    node_id: str
    addresses: list[str]
    clock: Callable[[], float]
    node: DhtNode
    keyring: Keyring | None
    observer: AddressObserver
    republisher: Republisher
    stats: Any
    _seq: int
    _capabilities: tuple[dict[str, Any], int] | None

    if TYPE_CHECKING:
        async def _request(self, contact: Contact, msg: dict[str, Any], expect: str,
                           timeout_s: float | None = None) -> Answer: ...

        async def _lookup(self, target: int, make_msg: Callable[[], dict[str, Any]],
                          expect: str,
                          on_answer: Callable[[Lookup, Contact, Answer], None] | None = None
                          ) -> Lookup: ...

        async def lookup_nodes(self, key: str | int) -> list[Contact]: ...

        def crashed(self, where: str, e: BaseException) -> None: ...

        def _reap(self, task: asyncio.Task[Any]) -> None: ...

    async def put_record(self, env: dict[str, Any], keys: Sequence[str] | None = None
                         ) -> dict[str, int]:
        """Store a signed record under ``keys`` (default: every key it implies) on the k
        closest nodes of each. Returns how many nodes stored it, per key."""
        now = int(self.clock())
        keys = list(keys) if keys is not None else implied_keys(env, now, self.keyring)
        out: dict[str, int] = {}
        for key in keys:
            value = verify_value(env, key, now, self.keyring)
            if self.node.table.is_close(key_id(key)):
                try:
                    self.node.store.put(value, now)  # we are a holder too
                except PhaseError:
                    pass
            holders = await self.lookup_nodes(key)
            results = await asyncio.gather(
                *(self._request(c, dht_node.put(key, env, self.addresses), "dht_stored")
                  for c in holders), return_exceptions=True)
            out[key] = sum(1 for r in results if isinstance(r, Answer))
        return out

    async def iter_records(self, key: str, *, want_self: bool = False,
                           on_self: Callable[[Value], None] | None = None,
                           limit: int | None = None) -> AsyncIterator[Value]:
        """Verified records under ``key`` as holders return them (newest per node or signer
        set, each reported once). With ``want_self``, each answering node's own record
        is checked and passed to ``on_self``."""
        col = Collector(key, self.keyring)
        queue: asyncio.Queue[Value | None] = asyncio.Queue()
        selves: set[str] = set()
        pages: set[asyncio.Future[None]] = set()

        def take(lk: Lookup, c: Contact, ans: Answer) -> None:
            for v in col.add(ans.records, int(self.clock()), holder=c.node_id):
                queue.put_nowait(v)
            if col.forged:  # no honest holder serves a forgery: drop it and what it named
                lk.on_bad(c.node_id)
            if ans.self_record is not None and on_self is not None and c.node_id not in selves:
                try:
                    v = verify_value(ans.self_record, node_key(c.node_id), int(self.clock()))
                except Exception:  # verify_value raises only PhaseError; be safe anyway
                    self.stats["bad_self_record"] += 1
                else:
                    selves.add(c.node_id)
                    on_self(v)
            if ans.more and ans.records:
                pages.add(asyncio.ensure_future(more(c, ans)))

        async def more(c: Contact, ans: Answer) -> None:
            for _ in range(MAX_PAGES):
                last = last_id(ans.records)
                if last is None:
                    return
                try:
                    ans = await self._request(c, dht_node.get(key, after=last), "dht_value")
                except PhaseError:
                    return
                except Exception as e:
                    self.crashed("get_page", e)
                    return
                for v in col.add(ans.records, int(self.clock())):
                    queue.put_nowait(v)
                if not ans.more:
                    return

        async def run() -> None:
            try:
                await self._lookup(key_id(key), lambda: dht_node.get(key, want_self=want_self),
                                   "dht_value", take)
                if pages:
                    await asyncio.gather(*pages, return_exceptions=True)
            finally:
                for p in pages:
                    p.cancel()
                    p.add_done_callback(_quiet)
                queue.put_nowait(None)
                if col.rejected:
                    n = sum(col.rejected.values())
                    self.stats["records_rejected"] += n
                    log.get().info("dht.records_rejected", key=key, count=n,
                                   reasons=dict(col.rejected))

        for v in self.node.store.get(key, int(self.clock())):  # what we hold ourselves
            for w in col.add([v.envelope], int(self.clock())):
                queue.put_nowait(w)
        task = asyncio.ensure_future(run())
        task.add_done_callback(self._reap)
        n = 0
        try:
            while True:
                item = await queue.get()
                if item is None:
                    break
                yield item
                n += 1
                if limit is not None and n >= limit:
                    break
        finally:
            task.cancel()

    async def get_records(self, key: str, limit: int | None = None) -> list[Value]:
        return [v async for v in self.iter_records(key, limit=limit)]

    async def find_providers(self, key: str, limit: int | None = None) -> list[Value]:
        """Node records filed under a capability or boot key (providers of that key)."""
        return [v async for v in self.iter_records(key, limit=limit)
                if v.doc_type == records.TYPE]

    # -- our own record ---------------------------------------------------------

    def build_node_record(self, capabilities: dict[str, Any], *, lifetime_s: int = 3600
                          ) -> dict[str, Any]:
        """Sign a fresh node record: our addresses, what peers observe, a higher seq."""
        now = int(self.clock())
        self._seq = max(self._seq + 1, now)  # seconds: increases across restarts too
        body = records.build(node_id=self.node_id, addresses=self.addresses,
                             capabilities=capabilities, seq=self._seq, now=now,
                             lifetime_s=lifetime_s)
        port = split_address(self.addresses[0])[1] if self.addresses else 0
        observed = self.observer.observed_addresses(port, now) if port else []
        if observed:
            body["observed_addresses"] = observed
        body["reachability"] = self.observer.reachability(now)
        records.BODY(body, "node_record")
        return envelope.sign(records.TYPE, body, [self.identity])

    async def publish_node_record(self, capabilities: dict[str, Any], *,
                                  lifetime_s: int = 3600) -> dict[str, Any]:
        """Sign, keep (answers ``want_self``) and store our node record under every key it
        implies; it is republished by the upkeep every ``REPUBLISH_S``."""
        env = self.build_node_record(capabilities, lifetime_s=lifetime_s)
        self.node.own_record = env
        self._capabilities = (capabilities, lifetime_s)
        keys = record_keys(env["body"], records.TYPE)
        self.republisher.set("node_record", env, keys, self.clock())
        if len(self.node.table):
            self.republisher.due(self.clock())  # publishing now: next time in REPUBLISH_S
            if sum((await self.put_record(env, keys)).values()) == 0:
                self.republisher.set("node_record", env, keys, self.clock())
        else:  # alone (the first node of a network): we are the closest holder there is
            now = int(self.clock())
            for key in keys:
                with contextlib.suppress(PhaseError):
                    self.node.store.put(verify_value(env, key, now, self.keyring), now)
        return env



def _quiet(task: asyncio.Future[Any]) -> None:
    """Retrieve the outcome of a task nobody waits for any more (no "never retrieved")."""
    if not task.cancelled():
        task.exception()
