"""``plasmd submit``: run a job on a remote node and check what comes back.

connect (the handshake proves the node id when one is given) → offer → accept →
run (the signed manifest) → serve the worker's ``get`` requests for the module
and stdin → result (receipt + stdout and stderr blobs) → verify the receipt:
its signature, that the worker is the peer we dialled, that it is for the job
we sent with the module and stdin we sent, and that the output bytes hash to
the ids it names. Only then is the guest's output reported.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from typing import Any

from phase_core import documents, envelope, log, manifest, receipt, timefmt
from phase_core.canonical import content_id
from phase_core.errors import (
    DigestMismatch,
    ProtocolViolation,
    Rejected,
    TempFailure,
    Timeout,
)
from phase_core.identity import Identity
from phase_core.protocol import jobs
from phase_core.trust import Keyring
from plasmd.blobs import serve_get

# Rejections a client can retry elsewhere or later (exit 75) vs. final ones (exit 1).
RETRYABLE = {"queue_full", "shutting_down"}


class JobRejected(Rejected):
    slug = "job_rejected"


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
    from plasmd.config import parse_hostport

    node_id = None
    if "@" in text:
        node_id, _, text = text.partition("@")
        check_node_id(node_id, "the node id in --peer")
    host, port = parse_hostport(text)
    return node_id, host, port


def make_manifest(identity: Identity, module: bytes, stdin: bytes | None,
                  **kw: Any) -> dict[str, Any]:
    body = manifest.build(module=content_id(module),
                          stdin=content_id(stdin) if stdin is not None else None,
                          now=timefmt.now(), **kw)
    return envelope.sign(manifest.TYPE, body, [identity])


async def submit(identity: Identity, host: str, port: int, manifest_env: dict[str, Any],
                 blobs: dict[str, bytes], *, expected_node_id: str | None = None,
                 timeout_s: float = 60.0, client: Any = None) -> Outcome:
    """Submit one signed manifest; return the verified outcome or raise."""
    from phase_core.aio.quic import Client

    job_id = envelope.parse(manifest_env).id
    body = manifest_env["body"]

    async def serve(peer: str, stream: Any) -> None:
        msg = await stream.recv()
        if msg is not None and msg.get("type") == "get":
            await serve_get(stream, msg, blobs.get)  # only this job's blobs
        elif msg is not None:
            raise ProtocolViolation("a worker may only ask the submitter for blobs",
                                    slug="unexpected_message")

    from phase_core.aio.stream import Limits

    # a short idle timeout: a worker that dies mid-job is noticed in seconds
    cl = client or Client(identity, Limits(idle_timeout_s=10, keepalive_s=2), handler=serve)
    try:
        conn = await asyncio.wait_for(
            cl.connect(host, port, expected_node_id=expected_node_id), timeout=15)
    except TimeoutError:
        raise Timeout(f"no answer from {host}:{port} within 15 s") from None
    try:
        return await asyncio.wait_for(
            _exchange(conn, manifest_env, job_id, body, blobs), timeout=timeout_s)
    except TimeoutError:
        raise Timeout(f"the job did not finish within {timeout_s:.0f} s",
                      hint="raise --timeout, or check the worker") from None
    finally:
        await conn.close()


async def _exchange(conn: Any, manifest_env: dict[str, Any], job_id: str,
                    body: dict[str, Any], blobs: dict[str, bytes]) -> Outcome:
    peer = conn.peer_id
    stream = await conn.open_stream()
    async with stream:
        stdin_bytes = len(blobs.get(body["stdin"], b"")) if body["stdin"] else 0
        await stream.send(jobs.offer_for(manifest_env, job_id, len(blobs[body["module"]]),
                                         stdin_bytes))
        # pipelined: the run follows the offer at once; a worker that rejects the
        # offer never reads it (saves a round trip per job)
        await stream.send({"type": "run", "manifest": manifest_env})
        answer = jobs.check(await stream.recv(), "accept", "reject")
        _raise_if_rejected(answer)
        res = jobs.check(await stream.recv(), "result", "reject", "error")
        _raise_if_rejected(res)
        if res["type"] == "error":
            raise JobRejected(f"the worker could not run the job: {res['message']}",
                              slug=res["error"] if res["error"] else "job_failed")
        rec_env = res["receipt"]
        limit = int(body["limits"]["output_bytes"])
        stdout = await stream.recv_blob(max_bytes=limit)
        stderr = await stream.recv_blob(max_bytes=limit)
    return check_outcome(peer, job_id, body, rec_env, stdout, stderr)


def _raise_if_rejected(msg: dict[str, Any]) -> None:
    if msg["type"] != "reject":
        return
    cls = TempFailure if msg["reason"] in RETRYABLE else JobRejected
    raise cls(f"the worker rejected the job: {msg['reason']}"
              + (f" ({msg['message']})" if msg["message"] else ""), slug=msg["reason"])


def check_outcome(peer: str, job_id: str, body: dict[str, Any], rec_env: dict[str, Any],
                  stdout: bytes, stderr: bytes) -> Outcome:
    """Verify the receipt against what we sent and what we received."""
    kr = Keyring().with_key("worker", peer, [receipt.ROLE])
    v = documents.verify(rec_env, documents.Policy(kr, timefmt.now(),
                                                   expected_type=receipt.TYPE))
    rb = v.body
    if rb["worker"] != peer:
        raise Rejected("the receipt names another worker than the node we dialled",
                       slug="untrusted_signer")
    for field, want in (("job", job_id), ("module", body["module"])):
        if rb[field] != want:
            raise DigestMismatch(f"the receipt's {field} is {rb[field]}, we sent {want}",
                                 field=field)
    sent_stdin = body["stdin"] or content_id(b"")
    if rb["stdin"] != sent_stdin:
        raise DigestMismatch("the receipt names another stdin than the one we sent",
                             field="stdin")
    for name, data in (("stdout", stdout), ("stderr", stderr)):
        if "sha256:" + hashlib.sha256(data).hexdigest() != rb[name] or \
                len(data) != rb[f"{name}_bytes"]:
            raise DigestMismatch(f"the {name} bytes received do not match the receipt",
                                 field=name)
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
    from phase_core.errors import Unavailable
    from phase_discover.run import Options, discover_nodes

    req = manifest_env["body"]["requirements"]
    opts = Options("nodes", via=via, bootstrap=bootstrap, interfaces=interfaces,
                   arch=req.get("arch"), runtime=req.get("runtime"),
                   min_memory=int(req.get("memory_bytes", 0)), timeout_s=discover_timeout_s)
    tried: list[str] = []
    gen = discover_nodes(opts)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + discover_timeout_s  # for finding the next node
    try:
        while (left := deadline - loop.time()) > 0:
            try:
                rec = await asyncio.wait_for(gen.__anext__(), left)
            except (StopAsyncIteration, TimeoutError):
                break
            out = await _try_node(identity, manifest_env, blobs, rec, tried, timeout_s)
            if out is not None:
                return out
    finally:
        try:
            await asyncio.wait_for(gen.aclose(), 3)
        except (TimeoutError, RuntimeError):
            pass
    raise Unavailable("no node accepted the job" + (f" (tried {', '.join(tried)})" if tried
                                                    else ": none was found"),
                      hint="pass --peer, --bootstrap or --interface")


async def _try_node(identity: Identity, manifest_env: dict[str, Any], blobs: dict[str, bytes],
                    rec: dict[str, Any], tried: list[str], timeout_s: float) -> Outcome | None:
    """Submit to one discovered node, trying its addresses; None if it would not do."""
    from phase_core.errors import ProtocolViolation as PV
    from phase_core.errors import Unavailable
    from plasmd.config import parse_hostport

    node_id = str(rec["node_id"])
    for addr in dict.fromkeys([*rec.get("mdns_addresses", []), *rec.get("addresses", [])]):
        host, port = parse_hostport(addr)
        tried.append(f"{node_id[:16]}@{addr}")
        try:
            return await submit(identity, host, port, manifest_env, blobs,
                                expected_node_id=node_id, timeout_s=timeout_s)
        except (JobRejected, TempFailure, Unavailable, PV) as e:
            log.get().warning("submit.node_skipped", node=node_id, address=addr,
                              error=e.slug, message=e.message)
            if isinstance(e, JobRejected | TempFailure):
                return None  # the node answered: its other addresses would say the same
    return None
