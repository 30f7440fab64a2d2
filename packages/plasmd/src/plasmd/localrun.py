"""A local API job that runs on this node itself (docs/local-api.md): ``where`` is
``self``, or a ``peer`` that names this node (its id, or one of its addresses).

No QUIC hop to itself: the job goes straight to the node's job threads and warm
executor, with the guarantees of a job a peer sends (docs/protocol.md):

1. admitted as one from this node's own key (``Node._admit``: not draining, the
   requirements fit this host, module and stdin under the caps, a worker or queue
   slot free); a refusal is the error a remote worker's reject would be; it waits
   for a job thread and a guest slot in the round robin between submitters
   (``plasmd.fair``), as its signer;
2. on one job thread, in one hop: the manifest verified (signatures, schema,
   validity window), its id recorded in the replay journal (a replay is refused;
   the line is flushed while the guest runs), the guest run in a guest slot under
   its fences, and the receipt checked like any worker's
   (``plasmd.submit.check_outcome``); the receipt is appended to the receipt log
   once the id is durable (``Node._execute_later``), and the loop sends the result
   only once that entry is durable too. The job thread does not wait for either
   flush.

Access to the control socket authorizes the job here, whoever signed it (the
node's key, or a group member's own): its signer is the submitter the replay
journal remembers it under.
"""

from __future__ import annotations

import asyncio
from typing import Any

from phase_core.errors import Interrupted, PhaseError, TempFailure
from plasmd.admission import Admission
from plasmd.jobthread import Refused

__all__ = ["names_self", "run_here"]


def names_self(node: Any, text: str) -> bool:
    """``[<node-id>@]host:port`` names this node: its id, or (no id) an address it
    listens on. A malformed peer is not this node (the remote path reports it)."""
    from plasmd.submit import parse_peer

    try:
        node_id, host, port = parse_peer(text)
    except PhaseError:
        return False
    if node_id is not None:
        return bool(node_id == node.identity.node_id)
    for addr in node.addresses:
        try:
            _, h, p = parse_peer(addr)
        except PhaseError:
            continue
        if (h, p) == (host, port):
            return True
    return False


def _refusal(reason: str, message: str) -> PhaseError:
    """What a remote worker's reject would have raised (``plasmd.submit``)."""
    from phase_core.protocol.jobs_client import RETRYABLE
    from plasmd.submit import JobRejected

    cls = TempFailure if reason in RETRYABLE else JobRejected
    return cls(message, slug=reason)


async def run_here(node: Any, p: Any, run: Any, emit: Any) -> Any:
    """Run a prepared job (``plasmd.localjobs.Prepared``) on this node; the checked
    ``plasmd.submit.Outcome``."""
    from phase_core.protocol.jobs import offer_for
    from plasmd.localjobs import Cancelled

    body = p.manifest["body"]
    stdin = body.get("stdin")
    offer = offer_for(p.manifest, p.job, len(p.blobs[body["module"]]),
                      len(p.blobs[stdin]) if stdin is not None else 0)
    reason, why = node._admit(node.identity.node_id, offer)
    if reason is not None:
        node.counters.inc(f"rejected_{reason}")
        raise _refusal(reason, why)
    adm = Admission(node, node.identity.node_id)
    loop = asyncio.get_running_loop()
    try:
        emit({"stage": "queued"})
        async with node._slots.take(_submitter(node, p.manifest)):
            adm.start()
            run.here = True
            emit({"stage": "running"})
            try:
                out = await asyncio.shield(loop.run_in_executor(
                    node._pool, _one_hop, node, p, run.cancel))
            finally:
                run.here = False
        if not isinstance(out, Refused):  # the flushes, the job thread given back; the
            out, logged = out             # job still counts as running (a drain waits)
            await asyncio.shield(asyncio.wrap_future(logged))
    except Interrupted:
        node.counters.inc("jobs_cancelled")
        raise Cancelled("the job was cancelled; the guest was stopped and nothing "
                        "was recorded") from None
    finally:
        adm.end()
    if isinstance(out, Refused):
        node.counters.inc(f"rejected_{out.reason}")
        raise _refusal(out.reason, out.message)
    node.counters.inc("jobs_done")
    node.counters.inc("local_jobs")
    node.counters.inc(f"ended_{out.body['ended']}")
    return out


def _submitter(node: Any, env: dict[str, Any]) -> str:
    """Whom the job waits as, in the round robin between submitters (``plasmd.fair``):
    this node if it signed, else the first signer (checked on the job thread)."""
    keys = [s.get("key") for s in env.get("signatures", ()) if isinstance(s, dict)]
    me = node.identity.node_id
    return me if me in keys or not keys else str(keys[0])


def _one_hop(node: Any, p: Any, cancel: Any) -> Any:
    """On a job thread: verify, record, run, check; (the checked outcome, a future
    that resolves once the job id and the receipt are durable). A refusal is
    ``Refused``; a manifest that does not verify raises its error."""
    from phase_core import timefmt
    from plasm_exec.job import verify_manifest
    from plasmd.submit import check_outcome

    verified = verify_manifest(p.manifest, keyring=None, now=timefmt.now())
    keys = [t.key for t in verified.signers]
    me = node.identity.node_id
    who = me if me in keys else keys[0]
    recorded = node._record_run(who, verified)
    if isinstance(recorded, tuple):
        return Refused(*recorded)
    for cid, data in p.blobs.items():
        if not node._have(cid):
            node.cas.put_bytes(data, cid)
    result, logged = node._execute_later(p.manifest, verified, cancel, who, recorded)
    return check_outcome(me, verified.id, verified.body, result.receipt,
                         result.result.stdout or b"", result.result.stderr or b""), logged
