"""One job's work on a job thread, in one hop: ``JobThread.run_one_later``.

The node's event loop hands each admitted job whose module and stdin are here to
a job thread once; ``run_one_later`` then verifies the manifest, records its id
(replay protection; the line is flushed while the guest runs under its fences),
runs the guest and hands the receipt on: the journal's flusher thread appends it
to the receipt log once the id is durable, and the loop sends the result once
that entry is durable too. After a guest that ran no job thread waits for a
flush, so a node needs no more job threads than guest slots. Concurrent jobs
share the flushes of the job journal and of the receipt log (group commit,
``phase_core.groupsync``): a receipt still leaves the node only after its log
entry, and its job id's journal line, are durable.

``JobThread`` is a part of ``plasmd.node.Node`` (the attributes it uses are the
node's); it is its own module only to keep the node's module readable.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from phase_core import documents, manifest, timefmt
from phase_core.errors import (
    DigestMismatch,
    InternalError,
    MissingInput,
    PhaseError,
    Rejected,
    TempFailure,
)
from phase_core.protocol import jobs
from phase_core.state import Durable
from plasmd import liar

__all__ = ["JobThread", "Refused"]


@dataclass(frozen=True)
class Refused:
    """A ``run`` the node refuses after verifying it (``reject`` reason and message)."""

    reason: str
    message: str


class JobThread:
    """The per-job work of ``plasmd.node.Node`` that runs on its job threads."""

    config: Any
    keyring: Any
    state: Any
    cas: Any
    blobs: Any
    receipts: Any
    identity: Any
    counters: Any
    _executor: Any
    _guests: Any  # a ``plasmd.fair.FairGate`` of ``workers`` guest slots
    _children: Any  # a ``plasmd.jobproc.JobProcesses`` (or None: guests run here)
    executor: Any  # plasm-exec's Executor (a property of the node)

    # -- one job on a job thread ----------------------------------------------------
    def inputs_here(self, offer: dict[str, Any]) -> bool:
        """The offered module and stdin are here: ``run_one_later`` needs no fetch."""
        return self._have(offer["module"]) and (offer["stdin"] is None
                                                 or self._have(offer["stdin"]))

    def run_one_later(self, peer: str, offer: dict[str, Any], manifest_env: dict[str, Any],
                      cancel: threading.Event | None = None
                      ) -> tuple[documents.Verified, Any, Future[None]] | Refused:
        """One offered job's ``run``, whole, on a job thread (one hop per job).

        Verify the manifest (signed by ``peer``, the job that was offered), record
        its id (a replay is refused), run the guest under its fences, and hand its
        receipt to the log; returns (verified, ``JobResult``, logged) or ``Refused``.
        ``logged`` resolves once the job id and then the receipt are durable (or
        fails with their ``IOFailure``); the result may leave the node only then.
        The thread does not wait for those flushes. The module and stdin must be
        here (``inputs_here``). Raises ``PhaseError`` if the guest's run fails
        (``Interrupted`` when ``cancel`` was set: nothing was logged)."""
        verified, reject = self._verify_run(peer, manifest_env)
        if reject is not None:
            return Refused(*reject)
        assert verified is not None
        mismatch = jobs.matches_offer(offer, verified.body, verified.id)
        if mismatch is not None:
            return Refused("invalid_request", mismatch)
        recorded = self._record_run(peer, verified)
        if isinstance(recorded, tuple):
            return Refused(*recorded)
        result, logged = self._execute_later(manifest_env, verified, cancel, peer, recorded)
        return verified, result, logged

    def _verify_run(self, peer: str, env: dict[str, Any]
                    ) -> tuple[documents.Verified | None, tuple[str, str] | None]:
        """The run's manifest verified and signed by the submitting peer (a thread)."""
        keyring = self.keyring
        if self.config.open or peer == self.identity.node_id:  # see Node._admit
            keyring = keyring.with_key("submitter", peer, [manifest.ROLE])
        try:
            verified = documents.verify(env, documents.Policy(
                keyring, timefmt.now(), expected_type=manifest.TYPE))
        except Rejected as e:
            reason = "expired" if e.slug in ("expired", "not_yet_valid") else "invalid_request"
            return None, (reason, e.message)
        except PhaseError as e:
            return None, ("invalid_request", e.message)
        if peer not in {t.key for t in verified.signers}:
            self.counters.inc("unauthorized")
            return None, ("not_authorized", "the manifest must be signed by the peer "
                                                "that submits it")
        return verified, None

    def _record_run(self, peer: str, verified: documents.Verified
                    ) -> tuple[str, str] | Durable:
        """Remember the job id so it never runs twice (a thread): a replay is refused
        at once; the journal line is made durable while the guest runs, and
        ``_execute_later`` logs the receipt only once it is (docs/protocol.md)."""
        try:
            expires = timefmt.parse_time(verified.body["expires"])
            return self.state.begin_record_job(peer, verified.id, expires, timefmt.now())
        except Rejected as e:
            self.counters.inc("replays")
            return ("replay", e.message)
        except TempFailure as e:  # too many unexpired jobs from this submitter
            return ("queue_full", e.message)

    def _have(self, cid: str) -> bool:
        """The blob is here already (a module may also be compiled and in memory:
        that is asked first, it costs no I/O)."""
        return (self._executor is not None and self._executor.cached(cid) is not None
                ) or self.cas.has(cid)

    def _stdin_blob(self, cid: str) -> Path:
        """The stdin blob's path, hashed once per file identity (``VerifiedBlobs``):
        a blob file changed on disk is hashed again; a corrupt one is quarantined."""
        path = self.blobs.verify(cid)
        if path is None:
            raise MissingInput(f"stdin {cid} is not in the store, or does not hash to its id")
        return path

    def _execute_later(self, manifest_env: dict[str, Any], verified: documents.Verified,
                       cancel: threading.Event | None, submitter: str, recorded: Durable
                       ) -> tuple[Any, Future[None]]:
        """On a job thread: run the guest (in one of the ``workers`` guest slots)
        while its id's journal line is flushed; (``JobResult``, logged). Once that
        line is durable, the receipt is appended to the log, and ``logged`` resolves
        when that entry is durable too. Neither flush is waited for here: the
        thread is free for the next job meanwhile. A failed journal flush fails the
        job: no receipt is logged or sent. A guest's failure is raised once its
        id is durable (``recorded``), as a result would be."""
        try:
            result = self._run_guest(manifest_env, verified, cancel, submitter)
        except BaseException:
            recorded.wait()
            raise
        return result, self._log_later(result.receipt, recorded)

    def _log_later(self, receipt: dict[str, Any], recorded: Durable) -> Future[None]:
        """Append ``receipt`` once ``recorded`` is durable; resolved once the entry is."""
        logged: Future[None] = Future()
        append_later = getattr(self.receipts, "append_later", None)

        def entry_durable(got: Any) -> None:
            if isinstance(got, BaseException):
                logged.set_exception(got)
            else:
                logged.set_result(None)

        def id_durable(failure: PhaseError | None) -> None:
            if failure is not None:
                logged.set_exception(failure)
                return
            try:
                if append_later is None:  # an in-memory log (private mode): no flush
                    self.receipts.append(receipt)
                    logged.set_result(None)
                else:
                    append_later(receipt, entry_durable)
            except PhaseError as e:  # the write failed: the job fails, nothing is sent
                logged.set_exception(e)
            except Exception as e:  # a bug: the job fails all the same, nothing is sent
                logged.set_exception(InternalError(f"cannot log the receipt: {e!r}"))

        recorded.then(id_durable)
        return logged

    def _run_guest(self, manifest_env: dict[str, Any], verified: documents.Verified,
                   cancel: threading.Event | None, submitter: str) -> Any:
        """The guest under its fences, in one of the ``workers`` guest slots, and its
        signed receipt (a ``JobResult``; the receipt is not logged yet). Waiting
        guests get the slots round-robin per ``submitter`` (``plasmd.fair``)."""
        with self._guests.slot(submitter, cancel):
            self.counters.inc("wasm_runs")
            try:
                if self._children is not None:  # in a job process (plasmd.jobproc)
                    stdin = verified.body["stdin"]
                    result = self._children.run(
                        verified, None if stdin is None else self._stdin_blob(stdin),
                        self.config.ceilings, cancel)
                else:
                    from plasm_exec.job import execute_job

                    result = execute_job(manifest_env, executor=self.executor, cas=self.cas,
                                         identity=self.identity, now=timefmt.now(),
                                         ceilings=self.config.ceilings, verified=verified,
                                         store_outputs=False,  # outputs go to the submitter
                                         cancel=cancel, stdin_blob=self._stdin_blob)
            except DigestMismatch:  # the stdin read for the guest is not the one checked
                if verified.body["stdin"] is not None:
                    self.blobs.distrust(verified.body["stdin"])
                raise
        if liar.enabled():  # tests only: PHASE_TEST_LIAR=1 in the environment (liar.py)
            result = liar.lie(result, self.identity)
        return result

    def _flush_counts(self) -> dict[str, int]:
        """Group commit at work: lines made durable and the fdatasyncs that did it."""
        out = {}
        for name, sync in (("journal", getattr(self.state, "journal_sync", None)),
                           ("receipt", getattr(self.receipts, "sync", None))):
            if sync is not None:
                out[f"{name}_lines_flushed"] = sync.covered
                out[f"{name}_flushes"] = sync.flushes
        return out

