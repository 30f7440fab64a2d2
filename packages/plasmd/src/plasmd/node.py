"""The node: admission, the job exchange on the worker side, blobs, node records.

Networking runs on one asyncio loop; guests run on a thread pool through
plasm-exec's library, so a slow job never stalls the node's networking. Every
incoming stream is one request (see ``phase_core.protocol.jobs``).

Admission, in order, before any blob is fetched or any wasm runs:
1. ``offer``: the submitter (the authenticated peer) must hold ``job-submitter``
   in the keyring, unless the node is open; the requirements must fit the
   host; a worker or queue slot must be free.
2. ``run``: the manifest must verify (signatures, schema, validity window),
   be signed by the peer that offered it, match the offer, and not be a
   replay (job ids are remembered per submitter until they expire, on disk
   except in private mode). Limits are clamped to the operator's ceilings.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phase_core import documents, envelope, log, manifest, records, timefmt
from phase_core.cas import ContentStore
from phase_core.errors import PhaseError, ProtocolViolation, Rejected, TempFailure, Timeout
from phase_core.identity import Identity
from phase_core.protocol import jobs
from phase_core.state import StateStore
from phase_core.trust import Keyring
from plasmd import capabilities
from plasmd.blobs import pull_into_store, serve_get
from plasmd.config import Config

MAX_MODULE_BYTES = 64 << 20
MAX_STDIN_BYTES = 256 << 20
RUN_WAIT_S = 10.0  # after accept, the submitter must send run within this
MIN_PULL_RATE = 256 << 10  # bytes/s a submitter must sustain when we pull its blobs
PULL_GRACE_S = 10.0


@dataclass
class Counters:
    c: collections.Counter[str] = field(default_factory=collections.Counter)

    def inc(self, key: str, n: int = 1) -> None:
        self.c[key] += n


class Node:
    def __init__(self, *, identity: Identity, config: Config, keyring: Keyring,
                 cas: ContentStore, state: StateStore, receipts: Any, home: Path,
                 executor: Any = None) -> None:
        self.identity = identity
        self.config = config
        self.keyring = keyring
        self.cas = cas
        self.state = state
        self.receipts = receipts
        self.home = home
        self.caps = capabilities.measure()
        self.counters = Counters()
        self.running = 0
        self.queued = 0
        self.draining = False
        self.started = time.time()
        self.addresses: list[str] = []
        self.record_seq = int(time.time())
        self.dht: Any = None  # a DhtService (internet mode)
        self.public_blobs: set[str] = set()  # served to anyone (published boot artifacts)
        self.published: Any = None  # plasmd.publish.Published
        self.discovery: Any = None
        self._executor = executor
        self._pool = ThreadPoolExecutor(max_workers=config.workers,
                                        thread_name_prefix="plasmd-job")
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="plasmd-io")
        self._slots = asyncio.Semaphore(config.workers)
        self._idle = asyncio.Event()
        self._idle.set()

    # -- lifecycle -------------------------------------------------------------
    @property
    def executor(self) -> Any:
        if self._executor is None:
            from plasm_exec.api import Executor
            self._executor = Executor(self.home)
        return self._executor

    def reload(self, keyring: Keyring, config: Config) -> None:
        """SIGHUP: new keyring and config; running jobs keep their admission."""
        self.keyring = keyring
        self.config = config
        log.get().info("node.reloaded", keys=len(keyring.keys), open=config.open)

    async def drain(self) -> None:
        """Refuse new jobs and wait for the ones in flight."""
        self.draining = True
        await self._idle.wait()
        self._pool.shutdown(wait=True)
        self._io.shutdown(wait=True)

    # -- dispatch ----------------------------------------------------------------
    async def handle(self, peer_id: str, stream: Any) -> None:
        msg = await stream.recv()
        if msg is None:
            return
        t = msg.get("type")
        if t == "offer":
            await self._job(peer_id, msg, stream)
        elif t == "get":
            lookup = self._lookup_blob if self._may_fetch(peer_id) else self._lookup_public
            if await serve_get(stream, msg, lookup):
                self.counters.inc("blobs_served")
        elif t == "ping":
            jobs.check(msg, "ping")
            await stream.send({"type": "pong", "nonce": msg["nonce"]})
        elif t == "get_node_record":
            await stream.send({"type": "node_record", "record": self.node_record()})
        elif isinstance(t, str) and t.startswith("dht_") and self.dht is not None:
            await self.dht.handle(peer_id, msg, stream)
        else:
            self.counters.inc("bad_requests")
            raise ProtocolViolation(f"unknown request {str(t)[:32]!r}", slug="unexpected_message")

    def _may_fetch(self, peer: str) -> bool:
        """Who may fetch any stored blob (module or stdin): peers the keyring knows,
        or anyone when the node is open. Others get only published blobs."""
        return self.config.open or peer in self.keyring.keys

    def _lookup_public(self, cid: str) -> Path | None:
        return self._lookup_blob(cid) if cid in self.public_blobs else None

    def _lookup_blob(self, cid: str) -> Path | None:
        # Serve only intact blobs: re-hash before sending.
        if not self.cas.has(cid):
            return None
        try:
            return self.cas.verify(cid)
        except PhaseError:
            return None

    def capabilities(self) -> dict[str, Any]:
        caps = capabilities.measure()
        if self.published is not None and self.published.manifests:
            caps["boot"] = self.published.entries()
        return caps

    def node_record(self) -> dict[str, Any]:
        caps = self.capabilities()
        if self.dht is not None:  # the DHT's record also carries observed addresses
            env: dict[str, Any] = self.dht.build_node_record(caps)
            return env
        self.record_seq = max(self.record_seq + 1, int(time.time()))
        body = records.build(node_id=self.identity.node_id, addresses=self.addresses,
                             capabilities=caps, seq=self.record_seq, now=timefmt.now())
        return envelope.sign(records.TYPE, body, [self.identity])

    # -- the job exchange, worker side -------------------------------------------
    async def _job(self, peer: str, offer: dict[str, Any], stream: Any) -> None:
        jobs.check(offer, "offer")
        job_id = offer["job"]
        reason, why = self._admit(peer, offer)
        if reason is not None:
            self.counters.inc(f"rejected_{reason}")
            log.get().info("job.rejected", peer=peer, job=job_id, reason=reason)
            await stream.send(jobs.reject(job_id, reason, why))
            return
        self.queued += 1  # accepted, not running yet (until it takes a worker slot)
        self._idle.clear()
        started = delivered = False
        try:
            await stream.send({"type": "accept", "job": job_id})
            try:
                run = jobs.check(await asyncio.wait_for(stream.recv(), RUN_WAIT_S), "run")
            except TimeoutError:
                raise Timeout(f"no run within {RUN_WAIT_S:g} s of accept") from None
            loop = asyncio.get_running_loop()
            # verification records the job id durably (fsync): keep it off the loop
            verified, reject = await loop.run_in_executor(
                self._io, self._check_run, peer, offer, run["manifest"])
            if reject is not None:
                self.counters.inc(f"rejected_{reject[0]}")
                log.get().info("job.rejected", peer=peer, job=job_id, reason=reject[0],
                               stage="run")
                await stream.send(jobs.reject(job_id, *reject))
                return
            assert verified is not None
            body = verified.body
            opener = stream.connection.open_stream
            for cid, size, cap in ((body["module"], offer["module_bytes"], MAX_MODULE_BYTES),
                                   (body["stdin"], offer["stdin_bytes"], MAX_STDIN_BYTES)):
                if cid is not None and not self._have(cid):
                    limit = PULL_GRACE_S + size / MIN_PULL_RATE
                    try:
                        await asyncio.wait_for(
                            pull_into_store(opener, self.cas, cid, size, cap), limit)
                    except TimeoutError:
                        raise Timeout(f"the submitter did not deliver {cid} in {limit:.0f} s"
                                      ) from None
                    self.counters.inc("blobs_fetched")
            async with self._slots:
                self.queued -= 1
                self.running += 1
                started = True
                try:
                    result = await loop.run_in_executor(self._pool, self._execute,
                                                        run["manifest"], verified)
                finally:
                    self.running -= 1
            self.counters.inc("jobs_done")
            self.counters.inc(f"ended_{result.result.outcome.ended}")
            delivered = True  # from here on, a failure is the submitter going away
            await stream.send({"type": "result", "job": job_id, "receipt": result.receipt})
            await stream.send_blob(result.result.stdout or b"")
            await stream.send_blob(result.result.stderr or b"")
            log.get().info("job.done", peer=peer, job=job_id,
                           ended=result.result.outcome.ended,
                           exit_code=result.result.outcome.exit_code)
        except PhaseError as e:
            if isinstance(e, ProtocolViolation):
                raise
            if delivered:
                self.counters.inc("jobs_orphaned")
                log.get().info("job.orphaned", peer=peer, job=job_id, error=e.slug,
                               message="the submitter left before the result was delivered; "
                                       "the receipt is in the log")
                return
            self.counters.inc("jobs_failed")
            log.get().warning("job.failed", peer=peer, job=job_id, **e.to_record())
            with contextlib.suppress(PhaseError):
                await stream.send(jobs.error(e.slug, e.message))
        finally:
            if not started:
                self.queued -= 1
            if self.queued == 0 and self.running == 0:
                self._idle.set()

    def _admit(self, peer: str, offer: dict[str, Any]) -> tuple[str | None, str]:
        if self.draining:
            return "shutting_down", "the node is shutting down"
        if not self.config.open and not self.keyring.allows(peer, manifest.ROLE):
            self.counters.inc("unauthorized")
            return "not_authorized", "this node runs jobs only from submitters in its keyring"
        unmet = capabilities.unmet(offer["requirements"], self.caps)
        if unmet is not None:
            return unmet, "the job's requirements do not fit this node"
        if offer["module_bytes"] > MAX_MODULE_BYTES or offer["stdin_bytes"] > MAX_STDIN_BYTES:
            return "too_large", "module or stdin over this node's caps"
        if self.queued + self.running >= self.config.workers + self.config.queue:
            return "queue_full", "every worker and queue slot is taken"
        return None, ""

    def _check_run(self, peer: str, offer: dict[str, Any], env: dict[str, Any]
                   ) -> tuple[documents.Verified | None, tuple[str, str] | None]:
        now = timefmt.now()
        keyring = self.keyring
        if self.config.open:
            keyring = keyring.with_key("submitter", peer, [manifest.ROLE])
        try:
            verified = documents.verify(env, documents.Policy(
                keyring, now, expected_type=manifest.TYPE))
        except Rejected as e:
            reason = "expired" if e.slug in ("expired", "not_yet_valid") else "invalid_request"
            return None, (reason, e.message)
        except PhaseError as e:
            return None, ("invalid_request", e.message)
        if peer not in {t.key for t in verified.signers}:
            self.counters.inc("unauthorized")
            return None, ("not_authorized", "the manifest must be signed by the peer "
                                                "that submits it")
        mismatch = jobs.matches_offer(offer, verified.body, verified.id)
        if mismatch is not None:
            return None, ("invalid_request", mismatch)
        try:
            expires = timefmt.parse_time(verified.body["expires"])
            self.state.record_job(peer, verified.id, expires, now)
        except Rejected as e:
            self.counters.inc("replays")
            return None, ("replay", e.message)
        except TempFailure as e:  # too many unexpired jobs from this submitter
            return None, ("queue_full", e.message)
        return verified, None

    def _have(self, cid: str) -> bool:
        """The blob is here already (a module may also be compiled and in memory)."""
        return self.cas.has(cid) or (self._executor is not None
                                     and self._executor.cached(cid) is not None)

    def _execute(self, manifest_env: dict[str, Any], verified: documents.Verified) -> Any:
        """On a job thread: run the guest, then log the receipt durably."""
        from plasm_exec.job import execute_job

        self.counters.inc("wasm_runs")
        result = execute_job(manifest_env, executor=self.executor, cas=self.cas,
                             identity=self.identity, now=timefmt.now(),
                             ceilings=self.config.ceilings, verified=verified,
                             store_outputs=False)  # outputs go to the submitter only
        self.receipts.append(result.receipt)
        return result

    # -- status ----------------------------------------------------------------
    def _cache_use(self) -> dict[str, int]:
        blobs = size = 0
        for _, n in self.cas.list():  # one walk of the store
            blobs, size = blobs + 1, size + n
        return {"blobs": blobs, "bytes": size}

    def status(self, server: Any = None) -> dict[str, Any]:
        st: dict[str, Any] = {
            "v": 1, "type": "status", "mode": self.config.mode, "node_id": self.identity.node_id,
            "open": self.config.open, "listen": list(self.addresses),
            "uptime_s": int(time.time() - self.started),
            "jobs": {"running": self.running, "queued": self.queued,
                     "done": self.counters.c["jobs_done"],
                     "failed": self.counters.c["jobs_failed"],
                     "rejected": sum(v for k, v in self.counters.c.items()
                                     if k.startswith("rejected_"))},
            "workers": self.config.workers, "queue": self.config.queue,
            "counters": dict(self.counters.c),
            "cache": self._cache_use(),
            "receipts": self.receipts.count,
            "draining": self.draining,
        }
        if self.discovery is not None:
            st.update(self.discovery.status())
        if server is not None:
            st["peers"] = server.peers()
            st["connections"] = server.connection_count
            st["transport"] = dict(server.stats)
        return st
