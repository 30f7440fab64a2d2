"""The DHT node over the QUIC/Noise transport: a thin asyncio shell around protocol.dht_*.

Serving: the daemon's stream handler passes every request whose type starts
with ``dht_`` to ``DhtService.handle(peer_id, first_message, stream)``, which
answers it on the same stream. Asking: ``bootstrap``, ``lookup_nodes``,
``put_record``, ``iter_records``/``get_records``, ``find_providers`` and
``publish_node_record`` (the last four in aio/dht_records.py) run the sans-I/O
lookups over a connection ``Pool``: disjoint paths, per-peer timeouts from the
observed RTT, and replication of what we hold to new close contacts.
``start()`` runs the upkeep (republish, bucket refresh, expiry, saving the
routing table); ``close()`` stops it.

Every decision (who is a contact, what is stored, what is reported) is made in
``protocol/``; this module moves messages and keeps time.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from phase_core import log
from phase_core.aio.dht_records import RecordsMixin, _quiet
from phase_core.aio.pool import Pool
from phase_core.aio.stream import Limits, Stream
from phase_core.canonical import parse
from phase_core.errors import Malformed, PhaseError, Unavailable
from phase_core.fsutil import write_atomic
from phase_core.identity import Identity
from phase_core.protocol import dht_node
from phase_core.protocol.dht import (
    PATHS,
    Contact,
    K,
    check_address,
    dialable,
    join_address,
    key_id,
    split_address,
)
from phase_core.protocol.dht_lookup import Lookup
from phase_core.protocol.dht_node import (
    AddressObserver,
    Answer,
    DhtNode,
    parse_answer,
    stat_key,
)
from phase_core.protocol.dht_rtt import RttTracker
from phase_core.protocol.dht_store import (
    REPUBLISH_S,
    Republisher,
)
from phase_core.trust import Keyring

RPC_TIMEOUT_S = 3.0
UPKEEP_S = 30.0
MAX_DIALBACKS = 16  # dial-backs in flight (and, apart, replication pushes in flight)
MIN_LOOKUP_TIMEOUT_S = 1.0  # adaptive timeouts never go below this (a first dial handshakes)
Clock = Callable[[], float]


def _remote_address(stream: Stream) -> str | None:
    """The requester's address as we see it (for ``observed``), if the transport tells us."""
    addr = getattr(stream.connection, "remote_address", None)
    if not isinstance(addr, tuple) or len(addr) < 2:
        return None
    try:
        return check_address(join_address(str(addr[0]), int(addr[1])))
    except (Malformed, ValueError):
        return None


class DhtService(RecordsMixin):
    """One node's DHT: serves requests, runs lookups, publishes and refreshes records.

    ``addresses`` are the dialable ``host:port`` addresses this node listens on
    (empty for a client that only asks, like phase-discover: it is then never
    added to other nodes' routing tables). ``store_path`` keeps the routing
    table across restarts (internet mode); None keeps nothing.
    """

    def __init__(self, identity: Identity, addresses: Sequence[str],
                 store_path: Path | None = None, clock: Clock = time.time, *,
                 pool: Pool | None = None, keyring: Keyring | None = None,
                 rpc_timeout_s: float = RPC_TIMEOUT_S, rng: random.Random | None = None) -> None:
        self.identity = identity
        self.node_id = identity.node_id
        self.addresses = [check_address(a) for a in addresses if dialable(a)]
        self.store_path = Path(store_path) if store_path is not None else None
        self.clock = clock
        self.rpc_timeout_s = rpc_timeout_s
        self.rng = rng or random.Random()  # noqa: S311 - refresh targets, not secrets
        self.node = DhtNode(self.node_id, keyring=keyring, rng=self.rng,
                            rtt=RttTracker(min(MIN_LOOKUP_TIMEOUT_S, rpc_timeout_s),
                                           rpc_timeout_s))
        self.keyring = keyring
        self.observer = AddressObserver([split_address(a)[0] for a in self.addresses])
        self._own_pool = pool is None
        self.pool = pool or Pool(identity, Limits(handshake_timeout_s=rpc_timeout_s))
        self.republisher = Republisher(REPUBLISH_S)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._dialing: set[str] = set()
        self._pushing: set[str] = set()
        self._upkeep: asyncio.Task[None] | None = None
        self._seq = 0
        self._capabilities: tuple[dict[str, Any], int] | None = None
        self.stats = self.node.stats
        if self.store_path is not None:
            self._load_table()

    # -- serving --------------------------------------------------------------

    async def handle(self, peer_id: str, first_message: dict[str, Any], stream: Stream) -> None:
        """Answer one ``dht_*`` request that arrived on ``stream`` from ``peer_id``."""
        reply = self.node.handle(peer_id, first_message, self.clock(), _remote_address(stream))
        await stream.send(reply.message)
        stream.finish()
        if reply.candidate is not None:
            self._spawn_dialback(reply.candidate)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._reap)

    def _reap(self, task: asyncio.Task[Any]) -> None:
        """A background task ended: its exception (a bug) is counted and logged."""
        self._tasks.discard(task)
        if not task.cancelled() and (e := task.exception()) is not None:
            self.crashed("task", e)

    def crashed(self, where: str, e: BaseException) -> None:
        """Count and log a bug (with its traceback); the DHT carries on."""
        self.stats["internal_errors"] += 1
        log.get().error("dht.internal_error", where=where, error=repr(e)[:200],
                        traceback="".join(traceback.format_exception(e))[-4000:])

    def _spawn_dialback(self, contact: Contact) -> None:
        if contact.node_id in self._dialing or len(self._dialing) >= MAX_DIALBACKS:
            return
        self._dialing.add(contact.node_id)

        async def dial() -> None:
            try:
                await self._request(contact, dht_node.ping(self.addresses), "dht_pong")
            except PhaseError:
                pass
            except Exception as e:
                self.crashed("dialback", e)
            finally:
                self._dialing.discard(contact.node_id)
        self._spawn(dial())

    # -- one request ----------------------------------------------------------

    async def _request(self, contact: Contact, msg: dict[str, Any], expect: str,
                       timeout_s: float | None = None) -> Answer:
        """Ask ``contact`` (expecting its node id); a good answer makes it a contact."""
        last: PhaseError = Unavailable(f"{contact.node_id[:16]}… has no dialable address")
        wait = self.rpc_timeout_s if timeout_s is None else timeout_s
        for addr in contact.addresses:
            if not dialable(addr):
                continue
            host, port = split_address(addr)
            start = time.monotonic()
            try:
                async with asyncio.timeout(wait):
                    ans = await self._ask(host, port, contact.node_id, msg, expect)
            except TimeoutError:
                last = Unavailable(f"no answer from {addr} in {wait:g} s", slug="timeout")
                continue
            except PhaseError as e:
                last = e
                continue
            self.node.rtt.observe(contact.node_id, time.monotonic() - start)
            self._answered(contact, ans)
            return ans
        self.node.table.failed(contact.node_id)
        raise last

    async def _ask(self, host: str, port: int, node_id: str | None, msg: dict[str, Any],
                   expect: str) -> Answer:
        stream = await self.pool.open_stream(host, port, node_id)
        try:
            await stream.send(msg)
            stream.finish()
            raw = await stream.recv()
        except BaseException:
            stream.abort()
            raise
        ans = parse_answer(raw, expect)
        if ans.type == "dht_error":
            self.stats[stat_key("answer", ans.error)] += 1
            raise Unavailable(f"peer refused: {ans.error}: {ans.message}", slug="refused")
        return ans

    def _answered(self, contact: Contact, ans: Answer) -> None:
        now = self.clock()
        stale, pushes = self.node.learned(contact, now)
        if stale is not None:
            self._spawn_dialback_stale(stale)
        if pushes:
            self._spawn_push(contact, pushes)
        if ans.observed is not None:
            self.observer.observe(contact.node_id, ans.observed, now)

    def _spawn_push(self, contact: Contact, pushes: list[tuple[str, dict[str, Any]]]) -> None:
        """Replication: hand records we hold to a new node close to their keys."""
        if len(self._pushing) >= MAX_DIALBACKS or contact.node_id in self._pushing:
            return
        self._pushing.add(contact.node_id)

        async def push() -> None:
            try:
                for key, env in pushes:
                    await self._request(contact, dht_node.put(key, env, self.addresses),
                                        "dht_stored")
            except PhaseError:
                pass  # it may be full or think itself not close: its call
            except Exception as e:
                self.crashed("replicate", e)
            finally:
                self._pushing.discard(contact.node_id)
        self._spawn(push())

    def _spawn_dialback_stale(self, stale: Contact) -> None:
        if stale.node_id in self._dialing:
            return
        self._dialing.add(stale.node_id)

        async def check() -> None:
            try:
                await self._request(stale, dht_node.ping(self.addresses), "dht_pong")
            except PhaseError:
                pass  # _request already reported the failure to the table
            except Exception as e:
                self.crashed("stale_check", e)
            finally:
                self._dialing.discard(stale.node_id)
        self._spawn(check())

    # -- lookups --------------------------------------------------------------

    async def _lookup(self, target: int, make_msg: Callable[[], dict[str, Any]], expect: str,
                      on_answer: Callable[[Lookup, Contact, Answer], None] | None = None
                      ) -> Lookup:
        """Run a lookup over ``PATHS`` disjoint paths, each request with a timeout from the
        peer's observed RTT; ``on_answer`` may call ``lk.on_bad`` or ``lk.finish``.
        Peers the lookup came to distrust are penalized in the routing table."""
        lk = Lookup(target, self.node.table.closest(target), own_id=self.node_id, paths=PATHS)
        tasks: dict[asyncio.Task[Answer], Contact] = {}
        try:
            while not lk.done:
                for c in lk.next_queries():
                    wait = self.node.rtt.timeout(c.node_id)
                    tasks[asyncio.ensure_future(
                        self._request(c, make_msg(), expect, wait))] = c
                if not tasks:
                    break
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for t in done:
                    c = tasks.pop(t)
                    try:
                        ans = t.result()
                    except PhaseError:
                        lk.on_failure(c.node_id)
                        continue
                    except Exception as e:
                        self.crashed("lookup_request", e)
                        lk.on_failure(c.node_id)
                        continue
                    lk.on_response(c.node_id, ans.nodes)
                    if on_answer is not None:
                        try:
                            on_answer(lk, c, ans)
                        except Exception as e:  # one holder's answer, not the lookup
                            self.crashed("lookup_answer", e)
        finally:
            for t in tasks:
                t.cancel()
                t.add_done_callback(_quiet)  # a cancelled request may still end in an error
        for bad in lk.suspects:
            self.node.table.penalize(bad)
            self.stats["peers_distrusted"] += 1
        self.node.table.touch(target, self.clock())
        return lk

    async def bootstrap(self, addrs: Sequence[str]) -> int:
        """Contact each ``host:port`` (any node id), then look ourselves up.

        Returns the number of contacts in the routing table afterwards."""
        async def one(addr: str) -> None:
            host, port = split_address(addr)
            try:
                async with asyncio.timeout(self.rpc_timeout_s):
                    stream = await self.pool.open_stream(host, port, None)
                peer = stream.peer_id
                await stream.send(dht_node.ping(self.addresses))
                stream.finish()
                async with asyncio.timeout(self.rpc_timeout_s):
                    raw = await stream.recv()
                ans = parse_answer(raw, "dht_pong")
            except (PhaseError, TimeoutError) as e:
                log.get().info("dht.bootstrap_failed", address=addr,
                               error=getattr(e, "slug", "timeout"))
                return
            except Exception as e:
                self.crashed("bootstrap", e)
                return
            if peer != self.node_id and ans.type == "dht_pong":
                self._answered(Contact(peer, (addr,)), ans)
        await asyncio.gather(*(one(a) for a in addrs))
        if len(self.node.table):
            await self.lookup_nodes(self.node.table.own)
        return len(self.node.table)

    async def lookup(self, key: str | int) -> Lookup:
        """An iterative FIND_NODE lookup, finished (``.closest()``, ``.hops``)."""
        target = key_id(key) if isinstance(key, str) else key
        return await self._lookup(target, lambda: dht_node.find_node(target, self.addresses),
                                  "dht_nodes")

    async def lookup_nodes(self, key: str | int) -> list[Contact]:
        """The k closest nodes to a record key string or a 256-bit id."""
        return (await self.lookup(key)).closest(K)

    # -- upkeep -------------------------------------------------------------------

    def start(self, interval_s: float = UPKEEP_S) -> None:
        """Run republish, bucket refresh, expiry and table saving every ``interval_s``."""
        if self._upkeep is None:
            self._upkeep = asyncio.ensure_future(self._run_upkeep(interval_s))
            self._upkeep.add_done_callback(self._reap)

    async def _run_upkeep(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.upkeep()
            except PhaseError as e:
                log.get().warning("dht.upkeep_failed", error=e.slug, message=e.message)
            except Exception as e:  # a bug: logged with its traceback, the upkeep goes on
                self.crashed("upkeep", e)

    async def upkeep(self) -> None:
        now = self.clock()
        self.node.store.expire(int(now))
        for item in self.republisher.due(now):
            if item.envelope is self.node.own_record and self._capabilities is not None:
                caps, life = self._capabilities
                env = self.build_node_record(caps, lifetime_s=life)
                self.node.own_record = item.envelope = env
            stored = await self.put_record(item.envelope, item.keys)
            if sum(stored.values()) == 0:  # nobody took it (no contacts yet): try again soon
                item.next_at = now
        for target in self.node.table.refresh_targets(now, self.rng):
            await self.lookup_nodes(target)
        self.save_table()

    def status(self) -> dict[str, Any]:
        now = self.clock()
        return {"node_id": self.node_id, "contacts": len(self.node.table),
                "stored_records": self.node.store.count, "stored_bytes": self.node.store.bytes,
                "observed_addresses": self.observer.observed_addresses(
                    split_address(self.addresses[0])[1], now) if self.addresses else [],
                "reachability": self.observer.reachability(now)}

    def save_table(self) -> None:
        if self.store_path is None:
            return
        data = json.dumps(self.node.table.to_json(), separators=(",", ":")).encode()
        self.store_path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.store_path, data, mode=0o600)

    def _load_table(self) -> None:
        assert self.store_path is not None
        try:
            data = self.store_path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as e:
            log.get().warning("dht.table_unreadable", path=str(self.store_path), error=str(e))
            return
        try:
            n = self.node.table.load_json(parse(data, max_bytes=4 << 20), self.clock())
        except PhaseError as e:
            log.get().warning("dht.table_ignored", path=str(self.store_path), error=e.slug,
                              message=e.message)
            return
        log.get().info("dht.table_loaded", contacts=n)

    async def close(self) -> None:
        if self._upkeep is not None:
            self._upkeep.cancel()
            self._upkeep = None
        for t in list(self._tasks):
            t.cancel()
        self.save_table()
        if self._own_pool:
            await self.pool.close()
