"""The node: admission, the job exchange on the worker side, blobs, node records.

Networking runs on one asyncio loop; a job whose blobs are here goes to a job
thread once (``plasmd.jobthread``: ``run_one_later`` verifies, records, runs and
logs it), so a slow job never stalls the node's networking. The guest itself runs
in the job thread's job process (``plasmd.jobproc``: one child process per guest
slot), or, with ``job_processes = false``, on the job thread through plasm-exec's
library. Every
incoming stream is one request; the order of its messages is decided by the
sans-I/O ``phase_core.protocol.jobs_worker.Responder``: this module moves
messages and makes the node's decisions (admission, verification, running).
Missing module and stdin blobs are fetched from the submitter through
phase-fetch (``phase_fetch.peer.PeerSource``).

Admission, in order, before any blob is fetched or any wasm runs:
1. ``offer``: the submitter (the authenticated peer) must hold ``job-submitter``
   in the keyring, unless the node is open or the peer is this node itself (its
   own key, e.g. the local API's jobs; docs/protocol.md); the requirements must fit the
   host; a worker or queue slot must be free.
2. ``run``: the manifest must verify (signatures, schema, validity window),
   be signed by the peer that offered it, match the offer, and not be a
   replay (job ids are remembered per submitter until they expire, on disk
   except in private mode). Limits are clamped to the operator's ceilings.

Admitted jobs wait for a job thread (``_slots``) and then a guest slot
(``_guests``), both handed out round-robin per submitter (``plasmd.fair``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from phase_core import documents, envelope, log, manifest, records, timefmt
from phase_core.cas import ContentStore
from phase_core.errors import (
    InternalError,
    PhaseError,
    ProtocolViolation,
    TooLarge,
)
from phase_core.identity import Identity
from phase_core.protocol.jobs_worker import (
    MIN_PULL_RATE,
    PULL_GRACE_S,
    RUN_WAIT_S,
    WORKER_REQUESTS,
    BatchArrived,
    BlobWanted,
    DhtRequest,
    NodeRecordWanted,
    Offered,
    Responder,
    RunArrived,
    SubmitterGone,
    pull_timeout,
)
from phase_core.state import StateStore
from phase_core.trust import Keyring
from plasm_exec.wasmheader import MAX_MODULE_BYTES  # the engine's cap is the node's
from plasmd import capabilities
from plasmd.admission import Admission
from plasmd.blobs import VerifiedBlobs, answer_get, send_out
from plasmd.config import Config
from plasmd.fair import FairGate, FairSlots
from plasmd.jobproc import JobProcesses
from plasmd.jobthread import JobThread, Refused

MAX_STDIN_BYTES = 256 << 20
# the last 1/RESERVE_PART of the worker and queue slots (none below 32 slots) is kept
# for submitters below an equal share, counting one more who may come
# (docs/threat-model.md)
RESERVE_PART = 32
# Under load, the receipt log's flusher waits up to this long for the receipts of
# the guests now running, so one fdatasync covers them too (docs/performance.md,
# "Group commit under load"). It never waits when no job is queued: a lone job,
# or one beside a long guest, is flushed at once.
RECEIPT_LINGER_S = 0.005
__all__ = ["MAX_MODULE_BYTES", "MAX_STDIN_BYTES", "MIN_PULL_RATE", "PULL_GRACE_S",
           "RUN_WAIT_S", "Node", "Refused"]
T = TypeVar("T")


@dataclass
class Counters:
    c: collections.Counter[str] = field(default_factory=collections.Counter)

    def inc(self, key: str, n: int = 1) -> None:
        self.c[key] += n


class Node(JobThread):
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
        self.held: collections.Counter[str] = collections.Counter()  # admitted, not ended
        self.draining = False
        self.started = time.time()
        self.addresses: list[str] = []
        self.record_seq = int(time.time())
        self.dht: Any = None  # a DhtService (internet mode)
        self.public_blobs: set[str] = set()  # served to anyone (published boot artifacts)
        self.published: Any = None  # plasmd.publish.Published
        self.discovery: Any = None
        self._executor = executor
        # a child process per guest slot (plasmd.jobproc), unless the config says
        # threads, or the caller gave the engine to use in this process (tests)
        self._children = None if executor is not None or not config.job_processes else \
            JobProcesses(config.workers, home=home, cas_root=cas.root,
                         identity=identity,
                         output_cap=config.ceilings["output_bytes"])
        # ``workers`` job threads (``_slots``) and as many guest slots (``_guests``),
        # both handed out round-robin per submitter (docs/threat-model.md). No job
        # thread waits for a flush (``JobThread.run_one_later``), so more threads
        # than guests would only contend for the GIL with the event loop
        # (docs/performance.md, "Job threads")
        self._guests = FairGate(config.workers)
        if getattr(receipts, "sync", None) is not None:  # a log on disk
            receipts.sync.linger(RECEIPT_LINGER_S, self._receipts_coming)
        self._pool = ThreadPoolExecutor(max_workers=config.workers,
                                        thread_name_prefix="plasmd-job")
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="plasmd-io")
        self._hash = ThreadPoolExecutor(max_workers=2, thread_name_prefix="plasmd-hash")
        self._fetch = ThreadPoolExecutor(max_workers=4, thread_name_prefix="plasmd-fetch")
        self.blobs = VerifiedBlobs(cas)
        from phase_fetch.fetcher import sweep_leftovers

        sweep_leftovers(cas)  # what a killed node's fetches left; job fetches skip it
        self._slots = FairSlots(config.workers)
        self._idle = asyncio.Event()
        self._idle.set()

    # -- lifecycle -------------------------------------------------------------
    @property
    def executor(self) -> Any:
        if self._executor is None:
            from plasm_exec.api import Executor
            self._executor = Executor(self.home)
        return self._executor

    def start_job_processes(self) -> None:
        """Start the job processes now, so the first jobs do not wait for them."""
        if self._children is not None:
            self._children.start_all()

    def reload(self, keyring: Keyring, config: Config) -> None:
        """SIGHUP: new keyring and config; running jobs keep their admission."""
        self.keyring = keyring
        self.config = config
        log.get().info("node.reloaded", keys=len(keyring.keys), open=config.open)

    async def drain(self) -> None:
        """Refuse new jobs and wait for the ones in flight."""
        self.draining = True
        await self._idle.wait()
        for pool in (self._pool, self._io, self._hash, self._fetch):
            pool.shutdown(wait=True)
        if self._children is not None:
            self._children.close()
        close = getattr(self.receipts, "close", None)
        if close is not None:
            close()

    # -- dispatch ----------------------------------------------------------------
    async def handle(self, peer_id: str, stream: Any) -> None:
        """One incoming stream: the ``Responder`` says what it is; we answer."""
        r = Responder(time.monotonic, requests=WORKER_REQUESTS if self.dht is not None
                      else tuple(x for x in WORKER_REQUESTS if x != "dht_*"))
        msg = await stream.recv()  # a bad frame drops the connection (transport counters)
        try:
            ev = r.receive(msg)
        except ProtocolViolation:
            self.counters.inc("bad_requests")
            raise
        if isinstance(ev, Offered):
            await self._job(peer_id, r, ev, stream)
        elif isinstance(ev, BlobWanted):
            found = await self._lookup(ev.id, public_only=not self._may_fetch(peer_id))
            if await answer_get(stream, r, ev, found):
                self.counters.inc("blobs_served")
        elif isinstance(ev, NodeRecordWanted):
            r.answer_node_record(self.node_record())
            await send_out(stream, r.outbox())
        elif isinstance(ev, DhtRequest):
            await self.dht.handle(peer_id, ev.message, stream)
        elif isinstance(ev, BatchArrived):
            await self._batch(peer_id, ev, stream)
        else:  # a ping (answered by the machine) or an empty stream
            await send_out(stream, r.outbox())

    async def _batch(self, peer: str, ev: BatchArrived, stream: Any) -> None:
        """Several jobs on one stream: each goes through ``_job`` as if it had a
        stream of its own (``plasmd.batch``)."""
        from plasmd import batch

        await batch.serve(self, peer, ev.message, stream)

    def _may_fetch(self, peer: str) -> bool:
        """Who may fetch any stored blob (module or stdin): peers the keyring knows,
        or anyone when the node is open. Others get only published blobs."""
        return self.config.open or peer in self.keyring.keys

    async def _lookup(self, cid: str, *, public_only: bool) -> Path | None:
        """A stored blob that hashes to its id (published ones only, for strangers).
        Each blob is hashed once per file identity, on a thread, never on the loop."""
        if public_only and cid not in self.public_blobs:
            return None
        path = self.blobs.known(cid)
        if path is not None or not self.cas.has(cid):
            return path
        return await asyncio.get_running_loop().run_in_executor(
            self._hash, self.blobs.verify, cid)

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
    async def _job(self, peer: str, r: Responder, ev: Offered, stream: Any) -> None:
        """Move the job stream's messages; ``r`` decides their order."""
        offer, job_id = ev.offer, ev.job
        reason, why = self._admit(peer, offer)
        if reason is not None:
            self.counters.inc(f"rejected_{reason}")
            log.get().info("job.rejected", peer=peer, job=job_id, reason=reason)
            r.reject(reason, why)
            await send_out(stream, r.outbox())
            return
        adm = Admission(self, peer)  # queued until it takes a job thread
        delivered = False
        cancel = threading.Event()  # set when the submitter goes away
        try:
            r.accept()
            await send_out(stream, r.outbox())
            try:
                async with asyncio.timeout(r.time_left()):  # (no task, unlike wait_for)
                    msg = await stream.recv()
            except TimeoutError:
                r.deadline_passed(f"no run within {RUN_WAIT_S:g} s of accept")
            run = r.receive(msg)
            assert isinstance(run, RunArrived)
            if self.inputs_here(offer):
                # the common case: one hop to a job thread does all of it (run_one_later)
                watch = asyncio.create_task(self._watch_submitter(peer, r, stream, cancel))
                try:
                    ran = await self._in_slot(
                        adm, self.run_one_later, peer, offer, run.manifest, cancel,
                        logged=lambda ran: None if isinstance(ran, Refused) else ran[2])
                finally:
                    watch.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await watch
                if isinstance(ran, Refused):
                    await self._refuse(peer, job_id, r, stream, ran)
                    return
                verified, result, _ = ran
                if not r.admit(verified.id, verified.body):  # run_one_later checked it
                    raise InternalError("the job does not match its offer")
                r.started()
            else:
                fetched = await self._job_with_fetch(peer, r, offer, run, stream, cancel, adm)
                if fetched is None:
                    return
                verified, result = fetched
            self.counters.inc("jobs_done")
            self.counters.inc(f"ended_{result.result.outcome.ended}")
            delivered = True  # from here on, a failure is the submitter going away
            r.result(result.receipt, result.result.stdout or b"", result.result.stderr or b"")
            await send_out(stream, r.outbox())
            log.get().info("job.done", peer=peer, job=job_id,
                           ended=result.result.outcome.ended,
                           exit_code=result.result.outcome.exit_code)
        except PhaseError as e:
            if isinstance(e, ProtocolViolation):
                raise
            if cancel.is_set():
                self.note_cancelled(peer, job_id, e)
                return
            if delivered:
                self.counters.inc("jobs_orphaned")
                log.get().info("job.orphaned", peer=peer, job=job_id, error=e.slug,
                               message="the submitter left before the result was delivered; "
                                       "the receipt is in the log")
                return
            self.note_failed(peer, job_id, e)
            with contextlib.suppress(PhaseError):
                r.error(e.slug, e.message)
                await send_out(stream, r.outbox())
        finally:
            adm.end()

    async def _refuse(self, peer: str, job_id: str, r: Responder, stream: Any,
                      why: Refused) -> None:
        self.counters.inc(f"rejected_{why.reason}")
        log.get().info("job.rejected", peer=peer, job=job_id, reason=why.reason, stage="run")
        if not r.finished:
            r.reject(why.reason, why.message)
        await send_out(stream, r.outbox())

    async def _in_slot(self, adm: Admission, fn: Callable[..., T], *args: Any,
                       logged: Callable[[T], Future[None] | None]) -> T:
        """``fn(*args)`` on a job thread once a job thread is free for the admitted
        job's submitter (round-robin between submitters, ``plasmd.fair``); then,
        the job thread given back, wait for ``logged(out)`` (the job id and receipt
        made durable: ``JobThread.run_one_later``). The job counts as running until
        then, so a drain waits for its flushes too."""
        try:
            async with self._slots.take(adm.peer):
                adm.start()
                out = await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
            durable = logged(out)
            if durable is not None:
                await asyncio.wrap_future(durable)
            return out
        finally:
            adm.stop()

    async def _job_with_fetch(self, peer: str, r: Responder, offer: dict[str, Any],
                              run: RunArrived, stream: Any, cancel: threading.Event,
                              adm: Admission) -> tuple[documents.Verified, Any] | None:
        """A job whose module or stdin this node lacks: verify and record it, fetch
        the blobs from the submitter, then run it (None: it was refused)."""
        loop = asyncio.get_running_loop()
        verified, reject = await loop.run_in_executor(
            self._io, self._verify_run, peer, run.manifest)
        recorded = None
        if verified is not None and not r.admit(verified.id, verified.body):
            reject = ("invalid_request", "")  # r queued the reject
        elif verified is not None:
            recorded = await loop.run_in_executor(self._io, self._record_run, peer, verified)
            if isinstance(recorded, tuple):
                reject = recorded
        if reject is not None:
            await self._refuse(peer, str(offer["job"]), r, stream, Refused(*reject))
            return None
        assert verified is not None and recorded is not None and not isinstance(recorded, tuple)
        r.started()
        # from here the submitter must stay: if it goes away, stop the guest
        watch = asyncio.create_task(self._watch_submitter(peer, r, stream, cancel))
        try:
            await self._fetch_inputs(peer, stream, offer, verified.body)
            result, _ = await self._in_slot(adm, self._execute_later, run.manifest, verified,
                                            cancel, peer, recorded, logged=lambda out: out[1])
        finally:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
        return verified, result

    async def _watch_submitter(self, peer: str, r: Responder, stream: Any,
                               cancel: threading.Event) -> None:
        """While the job is on its way, the submitter sends nothing; the end of its
        stream or connection means it went away: stop the guest."""
        try:
            msg = await stream.recv()
        except ProtocolViolation:
            cancel.set()
            raise
        except PhaseError:  # the connection is gone
            msg = None
        try:
            ev = r.receive(msg)
        except ProtocolViolation as e:
            cancel.set()
            log.get().warning("job.peer_violation", peer=peer, job=r.job, **e.to_record())
            stream.abort()
            raise
        if isinstance(ev, SubmitterGone) or msg is None:  # (None: also before started())
            cancel.set()

    async def _fetch_inputs(self, peer: str, stream: Any, offer: dict[str, Any],
                            body: dict[str, Any]) -> None:
        """Fetch the module and stdin this node lacks from the submitter, through
        phase-fetch (``PeerSource`` over this connection; hashed into the store)."""
        from phase_fetch.fetcher import Fetcher, Options
        from phase_fetch.peer import PeerSource
        from phase_fetch.want import Want

        loop = asyncio.get_running_loop()
        for cid, size, cap in ((body["module"], offer["module_bytes"], MAX_MODULE_BYTES),
                               (body["stdin"], offer["stdin_bytes"], MAX_STDIN_BYTES)):
            if cid is None or self._have(cid):
                continue
            if size > cap:
                raise TooLarge(f"{cid} is {size} bytes; this node accepts at most {cap}")
            src = PeerSource(loop, stream.connection.open_stream, peer,
                             timeout_s=pull_timeout(size))
            fetcher = Fetcher(self.cas, peers=[src],  # the store was swept at start
                              options=Options(jobs=1, resume=False, max_bytes=cap),
                              sweep_store=False)
            try:
                await loop.run_in_executor(self._fetch, fetcher.fetch, Want(cid, size))
            finally:
                fetcher.close()
            self.counters.inc("blobs_fetched")

    def _receipts_coming(self) -> bool:
        """More receipts are on their way: a guest runs and jobs are queued behind it
        (read without locks from the flusher thread; a hint for the linger only)."""
        return self.queued > 0 and self._guests.busy()

    def _admit(self, peer: str, offer: dict[str, Any]) -> tuple[str | None, str]:
        if self.draining:
            return "shutting_down", "the node is shutting down"
        # a node trusts its own key (the local API signs with it; in private mode it is
        # ephemeral and in no keyring): only this node holds it
        if (not self.config.open and peer != self.identity.node_id
                and not self.keyring.allows(peer, manifest.ROLE)):
            self.counters.inc("unauthorized")
            return "not_authorized", "this node runs jobs only from submitters in its keyring"
        unmet = capabilities.unmet(offer["requirements"], self.caps)
        if unmet is not None:
            return unmet, "the job's requirements do not fit this node"
        if offer["module_bytes"] > MAX_MODULE_BYTES or offer["stdin_bytes"] > MAX_STDIN_BYTES:
            return "too_large", "module or stdin over this node's caps"
        capacity = self.config.workers + self.config.queue
        free = capacity - self.queued - self.running
        if free <= 0:
            return "queue_full", "every worker and queue slot is taken"
        if free <= capacity // RESERVE_PART:
            # the last slots go to submitters below their share, so one backlog
            # cannot keep everyone else out (docs/threat-model.md)
            # (a lone backlog leaves them too: the +1 is the next submitter to come)
            if self.held.get(peer, 0) >= capacity // (len(self.held) + 1):
                self.counters.inc("refused_over_share")
                return "queue_full", ("this submitter holds its share of the worker and "
                                      "queue slots; the last ones are kept for others")
        return None, ""

    # -- status ----------------------------------------------------------------
    def _cache_use(self) -> dict[str, int]:
        blobs = size = 0
        for _, n in self.cas.list():  # one walk of the store
            blobs, size = blobs + 1, size + n
        return {"blobs": blobs, "bytes": size}

    def note_cancelled(self, peer: str, job_id: str, e: PhaseError) -> None:
        """A job whose submitter went away: counted and logged (every job path)."""
        self.counters.inc("jobs_cancelled")
        log.get().info("job.cancelled", peer=peer, job=job_id, error=e.slug,
                       message="the submitter went away; the guest was stopped and "
                               "nothing was recorded")

    def note_failed(self, peer: str, job_id: str, e: PhaseError) -> None:
        """A job that failed on this node: counted and logged (every job path)."""
        self.counters.inc("jobs_failed")
        log.get().warning("job.failed", peer=peer, job=job_id, **e.to_record())

    def status(self, server: Any = None) -> dict[str, Any]:
        st: dict[str, Any] = {
            "v": 1, "type": "status", "mode": self.config.mode, "node_id": self.identity.node_id,
            "open": self.config.open, "listen": list(self.addresses),
            "uptime_s": int(time.time() - self.started),
            "jobs": {"running": self.running, "queued": self.queued,
                     "submitters": len(self.held),  # with jobs queued or running
                     "done": self.counters.c["jobs_done"],
                     "failed": self.counters.c["jobs_failed"],
                     "rejected": sum(v for k, v in self.counters.c.items()
                                     if k.startswith("rejected_"))},
            "workers": self.config.workers, "queue": self.config.queue,
            "counters": dict(self.counters.c, blobs_hashed=self.blobs.hashed,
                             **self._flush_counts()),
            "job_processes": (None if self._children is None else
                              {"count": self._children.count, "pids": self._children.pids(),
                               "restarts": self._children.restarts}),
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
