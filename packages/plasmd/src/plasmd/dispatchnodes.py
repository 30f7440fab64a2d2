"""The dispatcher's nodes: one warm ``plasmd.pool.Pool`` per worker, found by
``--peer`` or by discovery (mDNS and the DHT, ``submit.first_discovered``).

Each worker gets a pool of its own, so the scheduler decides which node runs
which job; inside a pool, jobs bound for that worker share one QUIC connection
and go out in ``batch`` frames when it advertises ``job-batch``. The pools do
not retry (the scheduler does, elsewhere). Every receipt is verified by the pool
(``submit.check_outcome``) before it counts as a vote. A discovered node is
dialled at its record's addresses in order until one answers (``add_record``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from phase_core import log
from phase_core.errors import JobFailed, PhaseError, TempFailure, Timeout
from phase_core.identity import Identity
from plasmd import dispatchsched as ds
from plasmd.pool import Job, Pool
from plasmd.submit import JobRejected, Outcome, record_addresses

# reject reasons that are the job's fault: no node would take it
JOB_FAULTS = frozenset({"invalid_request", "expired", "too_large"})
DEFAULT_CAPACITY = 16
MAX_ADDRESSES = 4  # of a discovered node's record, tried in order
ADDRESS_TIMEOUT_S = 6.0  # to connect and prove the node's key, per address


def classify(e: PhaseError) -> str:
    """The scheduler's failure kind for an attempt's error."""
    if isinstance(e, TempFailure) and e.slug == "queue_full":
        return ds.BUSY
    if isinstance(e, JobRejected):
        return ds.JOB_BAD if e.slug in JOB_FAULTS else ds.REFUSED
    if isinstance(e, JobFailed):
        return ds.REFUSED
    return ds.NODE_FAULT  # unreachable, timeout, protocol, a receipt that did not verify


def capacity_of(caps: dict[str, Any] | None, cap: int | None) -> int:
    """Jobs in flight a node may get: ``--max-per-node``, else 8 per advertised core."""
    if cap is not None:
        return cap
    if caps and isinstance(caps.get("cpu_cores"), int) and caps["cpu_cores"] > 0:
        return min(64, 8 * int(caps["cpu_cores"]))
    return DEFAULT_CAPACITY


def fits(requirements: dict[str, Any], caps: dict[str, Any] | None) -> bool:
    """A node's signed capabilities meet a job's requirements (unknown: let it say)."""
    from plasmd.capabilities import unmet

    if not caps:
        return True
    try:
        return unmet(requirements, caps) is None
    except (KeyError, TypeError):
        return True


class Nodes:
    def __init__(self, identity: Identity, *, on_node: Callable[..., None],
                 max_per_node: int | None = None) -> None:
        from phase_core.aio.stream import Limits

        self.identity = identity
        self.on_node = on_node  # (node_id, host, address, capacity, caps)
        self.max_per_node = max_per_node
        # a worker that dies mid-job is noticed within seconds
        self.limits = Limits(idle_timeout_s=6, keepalive_s=1.5, handshake_timeout_s=6)
        self.pools: dict[str, Pool] = {}
        self.addresses: dict[str, str] = {}
        self._dialling: set[str] = set()  # discovered nodes being connected to

    def _pool(self, peer: str) -> Pool:
        return Pool(self.identity, [peer], max_in_flight=4096, retries=0, limits=self.limits)

    async def add_peer(self, text: str, timeout_s: float = 10) -> str | None:
        """Connect to a ``--peer``, learn its node id and capabilities; None if it
        does not answer (logged)."""
        from plasmd.submit import parse_peer

        _, host, port = parse_peer(text)
        pool = self._pool(text)
        peer = pool._peers[0]
        if not await self._connect(pool, text, timeout_s):
            return None
        node_id = peer.peer_id
        assert node_id is not None
        if node_id in self.pools:  # the same node under two addresses
            await pool.close()
            return node_id
        caps = (peer.record or {}).get("body", {}).get("capabilities")
        self._added(node_id, host, f"{host}:{port}", pool, caps)
        return node_id

    async def _connect(self, pool: Pool, text: str, timeout_s: float) -> bool:
        """Connect ``pool`` to its peer and learn its record; False (the pool closed,
        logged) if it does not answer within ``timeout_s``."""
        peer = pool._peers[0]
        try:
            async with asyncio.timeout(timeout_s):
                await peer._connection()
            if peer.asked is not None:
                async with asyncio.timeout(timeout_s):
                    await asyncio.shield(peer.asked)
        except (PhaseError, TimeoutError) as e:
            log.get().warning("dispatch.peer_unreachable", peer=text,
                              error=getattr(e, "slug", "timeout"))
            await pool.close()
            return False
        return True

    async def add_record(self, rec: dict[str, Any],
                         timeout_s: float = ADDRESS_TIMEOUT_S) -> str | None:
        """A node record discovery found (its signature checked by phase-discover):
        its addresses are tried in order (the first ``MAX_ADDRESSES``) until one
        connects and the node proves its key there. The node id, or None."""
        from plasmd.hostport import parse_hostport

        node_id = str(rec.get("node_id", ""))
        addrs = record_addresses(rec)[:MAX_ADDRESSES]
        if node_id in self.pools or node_id in self._dialling or not addrs:
            return None
        self._dialling.add(node_id)
        try:
            for addr in addrs:
                try:
                    host, _port = parse_hostport(addr)
                except PhaseError:
                    continue
                pool = self._pool(f"{node_id}@{addr}")
                if not await self._connect(pool, f"{node_id}@{addr}", timeout_s):
                    continue
                if node_id in self.pools:  # (added meanwhile)
                    await pool.close()
                    return node_id
                self._added(node_id, host, addr, pool, rec.get("capabilities"))
                return node_id
            log.get().warning("dispatch.node_unreachable", node=node_id, addresses=addrs)
            return None
        finally:
            self._dialling.discard(node_id)

    def _added(self, node_id: str, host: str, address: str, pool: Pool,
               caps: dict[str, Any] | None) -> None:
        self.pools[node_id] = pool
        self.addresses[node_id] = address
        cap = capacity_of(caps if isinstance(caps, dict) else None, self.max_per_node)
        log.get().info("dispatch.node_added", node=node_id, address=address, capacity=cap)
        self.on_node(node_id, host, address, cap, caps if isinstance(caps, dict) else None)

    async def run(self, node_id: str, job: Job, timeout_s: float) -> Outcome:
        """One attempt of ``job`` on ``node_id``: its verified outcome, or raise."""
        fut = await self.pools[node_id].submit(job)
        try:
            async with asyncio.timeout(timeout_s):
                return await fut
        except TimeoutError:
            raise Timeout(f"no result from {node_id[:16]} within {timeout_s:.0f} s") from None

    async def discover(self, *, via: str, bootstrap: list[str], interfaces: list[str] | None,
                       timeout_s: float) -> None:
        """Add every node discovery finds within ``timeout_s`` (each dialled while
        discovery goes on; this returns once every one is added or given up)."""
        from plasmd.submit import first_discovered

        dialling: set[asyncio.Task[str | None]] = set()

        async def found(rec: dict[str, Any]) -> None:
            dialling.add(asyncio.create_task(self.add_record(rec)))
            return None

        try:
            await first_discovered({}, via=via, bootstrap=bootstrap, interfaces=interfaces,
                                   timeout_s=timeout_s, attempt=found)
            await asyncio.gather(*dialling)
        finally:
            for t in dialling:
                t.cancel()

    async def close(self) -> None:
        await asyncio.gather(*(p.close() for p in self.pools.values()), return_exceptions=True)
