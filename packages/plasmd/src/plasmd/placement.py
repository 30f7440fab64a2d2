"""``where: {"capabilities": …}``: run a local API job on any node that matches.

Candidates, in order: this node (only with ``include_self``), the listed ``peers``
(each asked for its self-signed node record over the node's warm connection; the
measured capabilities in it must match), then the nodes discovery finds over mDNS
and/or the DHT (phase-discover's ``discover_nodes``, which checks the records'
signatures and capabilities). Each is tried in turn: one that rejects the job, is
unreachable or breaks the protocol is skipped (a ``skipped`` progress record says
why); a receipt that does not verify ends the job (it is never retried elsewhere).
"""

from __future__ import annotations

from typing import Any

from phase_core import log
from phase_core.errors import PhaseError, ProtocolViolation, TempFailure, Unavailable

SKIPPABLE = ("job_rejected", "not_authorized", "queue_full", "shutting_down",
             "arch_mismatch", "runtime_not_supported", "insufficient_resources",
             "feature_not_supported", "too_large")


def _skippable(e: PhaseError) -> bool:
    from plasmd.submit import JobRejected

    return isinstance(e, JobRejected | TempFailure | Unavailable | ProtocolViolation) \
        or e.slug in SKIPPABLE


def _matches(want: dict[str, Any], caps: dict[str, Any]) -> bool:
    from phase_discover.run import Options, matches

    return matches(Options("nodes", arch=want.get("arch"), runtime=want.get("runtime"),
                           min_memory=int(want.get("memory_bytes", 0))), caps)


async def anywhere(jobs: Any, p: Any, run: Any, emit: Any) -> Any:
    from plasmd.submit import none_took, parse_peer

    w = p.where
    want = w["capabilities"]
    me = jobs.node.identity.node_id
    tried: list[str] = []
    skipped: list[PhaseError] = []  # why each node asked was passed over

    async def attempt(node_id: str | None, host: str, port: int) -> Any:
        label = f"{host}:{port}"
        tried.append(f"{(node_id or '?')[:16]}@{label}")
        emit({"stage": "connecting", "node": node_id or label, "address": label})
        try:
            return await jobs.out.submit(host, port, node_id, p.manifest, p.blobs,
                                         p.timeout_s)
        except PhaseError as e:
            if not _skippable(e):
                raise
            skipped.append(e)
            emit({"stage": "skipped", "node": node_id or label, "address": label,
                  "error": e.slug, "message": e.message[:300]})
            log.get().info("local_api.node_skipped", node=node_id, address=label,
                           error=e.slug)
            return None

    if w.get("include_self") and _matches(want, jobs.node.caps):
        tried.append(f"{me[:16]} (this node)")
        return await jobs.here(p, run, emit)
    for text in w.get("peers", []):
        try:
            node_id, host, port = parse_peer(text)
        except PhaseError as e:
            from plasmd.localreq import bad

            raise bad(f"where.peers: {e.message}") from None
        try:
            rec = await jobs.out.node_record(host, port, node_id)
        except PhaseError as e:
            emit({"stage": "skipped", "node": node_id or f"{host}:{port}",
                  "address": f"{host}:{port}", "error": e.slug, "message": e.message[:300]})
            tried.append(f"{(node_id or '?')[:16]}@{host}:{port}")
            continue
        if rec["node_id"] == me or not _matches(want, rec["capabilities"]):
            emit({"stage": "skipped", "node": rec["node_id"], "address": f"{host}:{port}",
                  "error": "capabilities_unmet",
                  "message": "its signed capabilities do not match"})
            tried.append(f"{rec['node_id'][:16]}@{host}:{port} (no match)")
            continue
        out = await attempt(rec["node_id"], host, port)
        if out is not None:
            return out
    via = w.get("via", "both" if w.get("bootstrap") else "mdns")
    if via != "none":
        out = await _discovered(w, want, via, me, attempt)
        if out is not None:
            return out
    raise none_took("no node matching the capabilities accepted the job", tried, skipped,
                    "list nodes under where.peers, or give where.bootstrap")


async def _discovered(w: dict[str, Any], want: dict[str, Any], via: str, me: str,
                      attempt: Any) -> Any:
    from plasmd.hostport import parse_hostport
    from plasmd.submit import first_discovered, record_addresses

    async def each(rec: dict[str, Any]) -> Any:
        node_id = str(rec["node_id"])
        if node_id == me:
            return None
        for addr in record_addresses(rec):
            host, port = parse_hostport(addr)
            out = await attempt(node_id, host, port)
            if out is not None:
                return out
        return None

    return await first_discovered(want, via=via, bootstrap=list(w.get("bootstrap", [])),
                                  interfaces=w.get("interfaces") or None,
                                  timeout_s=w.get("discover_timeout_ms", 5000) / 1000,
                                  attempt=each)
