"""Jobs this node sends to other nodes for its local clients, over warm connections.

The local node API (docs/local-api.md) runs a job on a named peer, or on a node
found by its capabilities, as this node: the manifest is signed by this node's
key, so the worker sees the submitter it authenticated. One connection pool
(``phase_core.aio.pool.Pool``, one connection per peer, kept alive) carries every
such job, so only the first job to a peer pays for a handshake.

The worker fetches a job's module and stdin with ``get`` requests on that
connection; they are answered from the jobs in flight to that very worker, and
only while its ``Submission`` allows it (``may_serve``), never anything else.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from phase_core.errors import PhaseError, Timeout
from phase_core.identity import Identity
from phase_core.protocol.jobs_client import Submission
from phase_core.protocol.jobs_worker import BLOBS_ONLY, BlobWanted, Responder
from plasmd import submit as submits
from plasmd.blobs import answer_get

CONNECT_TIMEOUT_S = 15.0


class Outgoing:
    """The node's client side for jobs it submits on its local clients' behalf."""

    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self._pool: Any = None
        self._jobs: dict[int, tuple[str, Submission, dict[str, bytes]]] = {}

    def pool(self) -> Any:
        if self._pool is None:
            from phase_core.aio.pool import Pool
            from phase_core.aio.stream import Limits

            # keep-alives hold the connection warm between jobs; a dead worker is
            # noticed within the idle timeout
            self._pool = Pool(self.identity, Limits(idle_timeout_s=30, keepalive_s=5),
                              handler=self._serve)
        return self._pool

    async def _serve(self, peer: str, stream: Any) -> None:
        r = Responder(time.monotonic, requests=BLOBS_ONLY)
        ev = r.receive(await stream.recv())
        if isinstance(ev, BlobWanted):
            data = None
            for worker, sub, blobs in list(self._jobs.values()):
                if worker == peer and sub.may_serve(ev.id):
                    data = blobs.get(ev.id)
                    break
            await answer_get(stream, r, ev, data)

    async def connect(self, host: str, port: int, node_id: str | None) -> Any:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                return await self.pool().get(host, port, node_id)
        except TimeoutError:
            raise Timeout(f"no answer from {host}:{port} within {CONNECT_TIMEOUT_S:g} s"
                          ) from None

    async def submit(self, host: str, port: int, node_id: str | None,
                     manifest_env: dict[str, Any], blobs: dict[str, bytes],
                     timeout_s: float) -> submits.Outcome:
        """Run one signed manifest on the peer; the verified outcome or an error."""
        for attempt in (1, 2):
            conn = await self.connect(host, port, node_id)
            sub = submits.new_submission(manifest_env, blobs, timeout_s)
            key = id(sub)
            self._jobs[key] = (conn.peer_id, sub, blobs)
            try:
                return await submits._exchange(conn, sub)
            except PhaseError as e:
                # a pooled connection the peer dropped since the last job: dial again,
                # once, when the job never got onto it
                if attempt == 2 or not conn.closed or sub.state != "new":
                    raise
                del e
            finally:
                del self._jobs[key]
        raise AssertionError("unreachable")  # pragma: no cover

    async def node_record(self, host: str, port: int, node_id: str | None) -> dict[str, Any]:
        """The peer's signed node record (``get_node_record``), verified as self-signed
        by the node we reached."""
        from phase_core import documents, records, timefmt
        from phase_core.errors import Rejected
        from phase_core.protocol.jobs_client import Query
        from phase_core.trust import Keyring

        conn = await self.connect(host, port, node_id)
        q = Query(time.monotonic, {"type": "get_node_record"})
        stream = await conn.open_stream()
        async with stream:
            q.start()
            for m in q.outbox():
                await stream.send(m)
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                ans = q.receive(await stream.recv())
        v = documents.verify(ans["record"], documents.Policy(  # self-signed
            Keyring(), timefmt.now(), expected_type=records.TYPE))
        if v.body.get("node_id") != conn.peer_id:
            raise Rejected("the node record describes another node", slug="wrong_node")
        return {"node_id": conn.peer_id, "capabilities": v.body.get("capabilities", {}),
                "addresses": v.body.get("addresses", [])}

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
