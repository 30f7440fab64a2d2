"""``plasmd submit``: run a job on a remote node and check what comes back.

connect (the handshake proves the node id when one is given) → offer → accept →
run (the signed manifest) → serve the worker's ``get`` requests for the module
and stdin → result (receipt + stdout and stderr blobs) → verify the receipt:
its signature, that the worker is the peer we dialled, that it is for the job
we sent with the module and stdin we sent, and that the output bytes hash to
the ids it names (``phase_core.receipt.check_binding``). Only then is the
guest's output reported.

The exchange's order is ``phase_core.protocol.jobs_client.Submission``'s; this
module moves bytes.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from phase_core import documents, envelope, exitcodes, log, manifest, receipt, timefmt
from phase_core.canonical import content_id
from phase_core.errors import PhaseError, Rejected, TempFailure, Timeout
from phase_core.identity import Identity
from phase_core.protocol.jobs_client import RETRYABLE, Failed, Finished, Refused, Submission
from phase_core.protocol.jobs_worker import BLOBS_ONLY, BlobWanted, Responder
from phase_core.trust import Keyring
from plasm_exec.wasmheader import check_header
from plasmd.blobs import answer_get, send_out

__all__ = [
    "RETRYABLE",
    "JobRejected",
    "ModuleRefused",
    "Outcome",
    "answer_error",
    "check_outcome",
    "first_discovered",
    "make_manifest",
    "new_submission",
    "none_took",
    "parse_peer",
    "record_addresses",
    "refused_module",
    "save_manifest",
    "submit",
    "submit_anywhere",
]

T = TypeVar("T")
# what ``plasmd submit`` without --peer says when discovery found no node to take the job
NO_NODE_HINT = "pass --peer, --bootstrap or --interface"


class JobRejected(Rejected):
    slug = "job_rejected"


class ModuleRefused(JobRejected):
    """The worker could not compile the module (``MODULE_FAULTS``): reported as a local
    run would report it, exit 65 with plasm-exec's hint. It is still a refusal by
    that worker (another node is tried, a dispatcher places the job elsewhere): a
    worker's word alone does not condemn a job."""

    exit_code = exitcodes.DATAERR


# a worker's ``error`` slugs that blame the module as sent (the engine's input errors)
MODULE_FAULTS = frozenset({"bad_module", "bad_import", "no_memory", "no_start"})
MODULE_HINT = "plasm-exec runs WASI preview1 core modules; try it locally with `plasm-exec run`"


def refused_module(errors: list[PhaseError], counted: str) -> ModuleRefused | None:
    """When each of ``errors`` (one per node) is a ``ModuleRefused``: the one error
    that says no node could run the module, as a local run would (exit 65, its
    hint); else None."""
    if not errors or not all(isinstance(e, ModuleRefused) for e in errors):
        return None
    first = errors[0]
    return ModuleRefused(f"no node could run the module ({len(errors)} {counted}): "
                         f"{first.message}", slug=first.slug, hint=first.hint)


def none_took(what: str, tried: list[str], skipped: list[PhaseError], hint: str
              ) -> PhaseError:
    """The error for a job no node took. ``skipped``: why each node was passed over.
    When every node that answered (a refusal, not an unreachable address) could not
    compile the module, ``refused_module``'s; otherwise ``Unavailable``, naming the
    nodes ``tried``."""
    from phase_core.errors import Unavailable

    answered = [e for e in skipped if isinstance(e, JobRejected | TempFailure)]
    return refused_module(answered, "answered") or Unavailable(
        what + (f" (tried {', '.join(tried)})" if tried else ": none was found"), hint=hint)


def answer_error(answer: Refused | Failed) -> PhaseError:
    """The error a worker's refusal or failure of a job is reported as."""
    if isinstance(answer, Refused):
        cls = TempFailure if answer.retryable else JobRejected
        return cls(f"the worker rejected the job: {answer.reason}"
                   + (f" ({answer.message})" if answer.message else ""), slug=answer.reason)
    message = f"the worker could not run the job: {answer.message}"
    if answer.error in MODULE_FAULTS:
        return ModuleRefused(message, slug=answer.error, hint=MODULE_HINT)
    return JobRejected(message, slug=answer.error or "job_failed")


@dataclass
class Outcome:
    worker: str
    receipt: dict[str, Any]
    stdout: bytes
    stderr: bytes

    @property
    def body(self) -> dict[str, Any]:
        return self.receipt["body"]


def parse_peer(text: str) -> tuple[str | None, str, int]:
    """``[<node-id>@]<host>:<port>`` → (node id or None, host, port)."""
    from phase_core.identity import check_node_id
    from plasmd.hostport import parse_hostport

    node_id = None
    if "@" in text:
        node_id, _, text = text.partition("@")
        check_node_id(node_id, "the node id in --peer")
    host, port = parse_hostport(text)
    return node_id, host, port


def make_manifest(identity: Identity, module: bytes, stdin: bytes | None,
                  **kw: Any) -> dict[str, Any]:
    """A job manifest for ``module`` signed by ``identity``; a module that is not a
    WASM core module is refused here (``bad_module``), before anything is sent."""
    check_header(module)
    body = manifest.build(module=content_id(module),
                          stdin=content_id(stdin) if stdin is not None else None,
                          now=timefmt.now(), **kw)
    return envelope.sign(manifest.TYPE, body, [identity])


def save_manifest(path: str | None, manifest_env: dict[str, Any]) -> None:
    """``--manifest-out``: keep the signed job manifest (before anything is sent), so
    anyone can later check a receipt's binding to it offline."""
    if path:
        from pathlib import Path

        from phase_core.fsutil import write_atomic

        write_atomic(Path(path), (json.dumps(manifest_env) + "\n").encode())


async def submit(identity: Identity, host: str, port: int, manifest_env: dict[str, Any],
                 blobs: dict[str, bytes], *, expected_node_id: str | None = None,
                 timeout_s: float = 60.0, client: Any = None) -> Outcome:
    """Submit one signed manifest; return the verified outcome or raise.

    The order of the exchange is decided by ``jobs_client.Submission``; this
    function only moves its messages, serves the worker's ``get`` requests the
    machine allows, and enforces the machine's deadline."""
    from phase_core.aio.quic import Client
    from phase_core.aio.stream import Limits

    sub = new_submission(manifest_env, blobs, timeout_s)
    worker: list[str] = []  # the peer dialled, once connected

    async def serve(peer: str, stream: Any) -> None:
        r = Responder(time.monotonic, requests=BLOBS_ONLY)
        ev = r.receive(await stream.recv())
        if isinstance(ev, BlobWanted):  # only this job's blobs, only to its worker
            ok = peer in worker and sub.may_serve(ev.id)
            await answer_get(stream, r, ev, blobs.get(ev.id) if ok else None)

    # a short idle timeout: a worker that dies mid-job is noticed in seconds
    cl = client or Client(identity, Limits(idle_timeout_s=10, keepalive_s=2), handler=serve)
    try:
        async with asyncio.timeout(15):
            conn = await cl.connect(host, port, expected_node_id=expected_node_id)
    except TimeoutError:
        raise Timeout(f"no answer from {host}:{port} within 15 s") from None
    worker.append(conn.peer_id)
    try:
        return await _exchange(conn, sub)
    finally:
        conn.close_now()  # one job per connection: no closing period to wait out


def new_submission(manifest_env: dict[str, Any], blobs: dict[str, bytes],
                   timeout_s: float) -> Submission:
    """The sans-I/O machine for submitting one signed manifest with its blobs."""
    job_id = envelope.parse(manifest_env).id
    return Submission(time.monotonic, manifest_env, job_id,
                      {cid: len(data) for cid, data in blobs.items()}, timeout_s=timeout_s)


async def _exchange(conn: Any, sub: Submission) -> Outcome:
    stream = await conn.open_stream()
    async with stream:
        sub.start()
        try:
            async with asyncio.timeout(sub.time_left()):
                await send_out(stream, sub.outbox())
                done = await _receive_all(stream, sub)
        except TimeoutError:
            sub.deadline_passed(f"the job did not finish within {sub.timeout_s:.0f} s",
                                hint="raise --timeout, or check the worker")
    return check_outcome(conn.peer_id, sub.job, sub.manifest["body"], done.receipt,
                         done.stdout, done.stderr)


async def _receive_all(stream: Any, sub: Submission) -> Finished:
    while True:
        cap = sub.expect_blob
        ev = (sub.receive(await stream.recv()) if cap is None
              else sub.receive_blob(await stream.recv_blob(max_bytes=cap)))
        if isinstance(ev, Refused | Failed):
            raise answer_error(ev)
        if isinstance(ev, Finished):
            return ev


def check_outcome(peer: str, job_id: str, body: dict[str, Any], rec_env: dict[str, Any],
                  stdout: bytes, stderr: bytes) -> Outcome:
    """Verify the receipt (signed by ``peer``) and its binding to the job we sent
    and the bytes we received (``phase_core.receipt.check_binding``)."""
    kr = Keyring().with_key("worker", peer, [receipt.ROLE])
    v = documents.verify(rec_env, documents.Policy(kr, timefmt.now(),
                                                   expected_type=receipt.TYPE))
    receipt.check_binding(v.body, job_id=job_id, manifest_body=body, worker=peer,
                          stdout=stdout, stderr=stderr)
    rb = v.body
    log.get().info("submit.verified", worker=peer, job=job_id, ended=rb["ended"],
                   exit_code=rb["exit_code"])
    return Outcome(peer, rec_env, stdout, stderr)


async def submit_anywhere(identity: Identity, manifest_env: dict[str, Any],
                          blobs: dict[str, bytes], *, via: str, bootstrap: list[str],
                          interfaces: list[str] | None, discover_timeout_s: float,
                          timeout_s: float) -> Outcome:
    """Find capable nodes (mDNS and/or the DHT) and submit to each in turn until one
    returns a verified result. A node that rejects, fails or breaks the protocol is
    skipped; a receipt that does not verify is final (exit 1), never retried."""
    tried: list[str] = []
    skipped: list[PhaseError] = []

    async def attempt(rec: dict[str, Any]) -> Outcome | None:
        return await _try_node(identity, manifest_env, blobs, rec, tried, skipped,
                               timeout_s)

    out = await first_discovered(manifest_env["body"]["requirements"], via=via,
                                 bootstrap=bootstrap, interfaces=interfaces,
                                 timeout_s=discover_timeout_s, attempt=attempt)
    if out is not None:
        return out
    raise none_took("no node accepted the job", tried, skipped, NO_NODE_HINT)


async def first_discovered(want: dict[str, Any], *, via: str, bootstrap: list[str],
                           interfaces: list[str] | None, timeout_s: float,
                           attempt: Callable[[dict[str, Any]], Awaitable[T | None]]
                           ) -> T | None:
    """``attempt`` each node record discovery finds (mDNS and/or the DHT) whose signed
    capabilities meet ``want`` (a manifest's ``requirements``), in the order found,
    until one gives an answer; None when ``timeout_s`` passes with none. The
    discovery is closed either way. Serves ``submit_anywhere`` (a direct client) and
    the local API's placement by capabilities (``plasmd.placement``)."""
    from phase_discover.run import Options, discover_nodes

    opts = Options("nodes", via=via, bootstrap=bootstrap, interfaces=interfaces,
                   arch=want.get("arch"), runtime=want.get("runtime"),
                   min_memory=int(want.get("memory_bytes", 0)), timeout_s=timeout_s)
    gen = discover_nodes(opts)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s  # for finding the next node
    try:
        while (left := deadline - loop.time()) > 0:
            try:
                async with asyncio.timeout(left):
                    rec = await gen.__anext__()
            except (StopAsyncIteration, TimeoutError):
                break
            out = await attempt(rec)
            if out is not None:
                return out
    finally:
        try:
            async with asyncio.timeout(3):
                await gen.aclose()
        except (TimeoutError, RuntimeError):
            pass
    return None


def record_addresses(rec: dict[str, Any]) -> list[str]:
    """A discovered node record's addresses, those seen over mDNS first, once each."""
    return list(dict.fromkeys([*rec.get("mdns_addresses", []), *rec.get("addresses", [])]))


async def _try_node(identity: Identity, manifest_env: dict[str, Any], blobs: dict[str, bytes],
                    rec: dict[str, Any], tried: list[str], skipped: list[PhaseError],
                    timeout_s: float) -> Outcome | None:
    """Submit to one discovered node, trying its addresses; None if it would not do
    (why goes to ``skipped``)."""
    from phase_core.errors import ProtocolViolation as PV
    from phase_core.errors import Unavailable
    from plasmd.hostport import parse_hostport

    node_id = str(rec["node_id"])
    for addr in record_addresses(rec):
        host, port = parse_hostport(addr)
        tried.append(f"{node_id[:16]}@{addr}")
        try:
            return await submit(identity, host, port, manifest_env, blobs,
                                expected_node_id=node_id, timeout_s=timeout_s)
        except (JobRejected, TempFailure, Unavailable, PV) as e:
            log.get().warning("submit.node_skipped", node=node_id, address=addr,
                              error=e.slug, message=e.message)
            skipped.append(e)
            if isinstance(e, JobRejected | TempFailure):
                return None  # the node answered: its other addresses would say the same
    return None
