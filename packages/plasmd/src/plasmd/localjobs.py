"""The local node API's ``submit`` (docs/local-api.md): check, sign, place, run, verify.

A request is checked and its inputs read off the loop (``prepare``): the module and
stdin by path, content id or inline bytes, under the caps; then the manifest is
signed by this node's key (only when the client names that key and is the node's
own user) or the client's own signed manifest is checked against the bytes.

Placement: ``self``, and a ``peer`` that names this node, run on this node's job
threads with a remote job's admission, replay record, fences and durable receipt
log, without a QUIC hop to itself (``plasmd.localrun``); other peers and
``capabilities`` go out over the node's warm connections (``plasmd.outgoing``).
Every outcome is verified (``submit.check_outcome``) before it is returned.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phase_core import log
from phase_core.errors import (
    InputError,
    Interrupted,
    MissingInput,
    PhaseError,
    Rejected,
    TooLarge,
)
from plasmd import localreq as rq

MAX_INLINE = 4 << 20
Emit = Callable[[dict[str, Any]], None]


class Cancelled(Interrupted):
    slug = "cancelled"


@dataclass
class Caller:
    uid: int
    gid: int
    pid: int
    owner: bool  # the daemon's own user, or root


@dataclass
class Prepared:
    manifest: dict[str, Any]
    job: str
    blobs: dict[str, bytes]
    where: dict[str, Any]
    signed_by_node: bool
    timeout_s: float


@dataclass(eq=False)  # kept in sets, by identity
class JobRun:
    """One unfinished submit: what ``cancel`` needs to stop it."""
    uid: int
    req: str | None
    job: str | None = None
    here: bool = False  # the guest runs on this node's threads now
    cancel: threading.Event = field(default_factory=threading.Event)
    task: asyncio.Task[Any] | None = None


def _blob(node: Any, spec: Any, what: str, caller: Caller, cap: int) -> bytes | None:
    if spec is None:
        return None
    if not isinstance(spec, dict) or len(spec) != 1:
        raise rq.bad(f"{what} is one of {{\"path\"}}, {{\"content_id\"}} or {{\"b64\"}}")
    (kind, value), = spec.items()
    if kind == "b64":
        if not isinstance(value, str) or len(value) > (MAX_INLINE * 4) // 3 + 4:
            raise TooLarge(f"inline {what} is over {MAX_INLINE} bytes",
                           hint="send a path or a content id instead")
        try:
            data = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise rq.bad(f"{what}.b64 is not base64") from None
        if len(data) > MAX_INLINE:
            raise TooLarge(f"inline {what} is over {MAX_INLINE} bytes",
                           hint="send a path or a content id instead")
        return data
    if not caller.owner:
        raise Rejected(f"only the node's own user may name a {what} by {kind}",
                slug="not_authorized", hint="send the bytes inline (b64)")
    if kind == "path":
        p = rq.string(value, f"{what}.path", 4096)
        if not p.startswith("/"):
            raise rq.bad(f"{what}.path must be absolute: {p}")
        try:  # a regular file only: a FIFO or a device would hold the thread
            with open(p, "rb", opener=lambda q, fl: os.open(q, fl | os.O_NONBLOCK)) as f:
                if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                    raise InputError(f"{p} is not a regular file", slug="bad_request")
                data = f.read(cap + 1)
        except FileNotFoundError:
            raise MissingInput(f"no such file: {p}",
                               hint="give an absolute path the node's user can read") from None
        except IsADirectoryError:
            raise InputError(f"{p} is a directory") from None
        except PermissionError:
            raise MissingInput(f"the node's user cannot read {p}",
                               hint="send the bytes inline (b64)") from None
        if len(data) > cap:
            raise TooLarge(f"{p} is over the cap of {cap} bytes")
        return data
    if kind == "content_id":
        from phase_core.canonical import check_content_id

        cid = rq.string(value, f"{what}.content_id", 100)
        try:
            check_content_id(cid, f"{what}.content_id")
        except PhaseError as e:
            raise rq.bad(e.message) from None
        if not node.cas.has(cid):
            raise MissingInput(f"{cid} is not in this node's store")
        data = node.cas.read(cid, max_bytes=cap)
        return bytes(data)
    raise rq.bad(f"{what} is one of {{\"path\"}}, {{\"content_id\"}} or {{\"b64\"}}")


def prepare(node: Any, req: dict[str, Any], caller: Caller) -> Prepared:
    """Check a submit request, read its inputs and sign (or check) its manifest.
    Blocking: run it on a thread."""
    from phase_core.canonical import content_id
    from phase_core.limits import DEFAULT_LIMITS
    from plasmd.node import MAX_MODULE_BYTES, MAX_STDIN_BYTES
    from plasmd.submit import make_manifest

    rq.only(req, rq.SUBMIT_KEYS, "submit")
    rq.boolean(req.get("progress", True), "progress")
    where = rq.where(req.get("where"))
    module = _blob(node, req.get("module"), "module", caller, MAX_MODULE_BYTES)
    if module is None:
        raise rq.bad("submit needs a module")
    stdin = _blob(node, req.get("stdin"), "stdin", caller, MAX_STDIN_BYTES)
    if ("submitter" in req) == ("manifest" in req):
        raise rq.bad("give exactly one of submitter (the node signs) and manifest "
                     "(signed by you)")
    if "manifest" in req:
        for k in ("args", "argv0", "env", "limits", "deterministic"):
            if k in req:
                raise rq.bad(f"{k} comes from the signed manifest; leave it out")
        from phase_core import envelope

        env = req["manifest"]
        parsed = envelope.parse(env)
        body = parsed.body
        if body.get("module") != content_id(module) or body.get("stdin") != (
                content_id(stdin) if stdin is not None else None):
            from phase_core.errors import DigestMismatch

            raise DigestMismatch("the manifest's module or stdin id does not match the "
                                 "bytes given")
        signed_by_node = node.identity.node_id in envelope.signer_keys(parsed)
        job, limits = parsed.id, body.get("limits", DEFAULT_LIMITS)
    else:
        sub = req["submitter"]
        if sub not in ("node", node.identity.node_id):
            raise Rejected(f"this node does not hold the key {str(sub)[:16]}…; it signs "
                           "only with its own", slug="not_authorized",
                           hint="sign the manifest yourself and send it as manifest")
        if not caller.owner:
            raise Rejected("only the node's own user may have the node sign a job",
                           slug="not_authorized", hint="sign the manifest yourself")
        limits = rq.limits(req.get("limits"))
        argv0 = rq.string(req.get("argv0", _argv0(req)), "argv0", 4096)
        env = make_manifest(node.identity, module, stdin,
                            argv=[argv0, *rq.strings(req.get("args", []), "args")],
                            env=rq.env(req.get("env", {})), limits=limits,
                            requirements=rq.requirements(where),
                            deterministic=rq.boolean(req.get("deterministic", False),
                                                     "deterministic"))
        from phase_core import envelope

        job, signed_by_node = envelope.parse(env).id, True
    blobs = {content_id(module): module}
    if stdin is not None:
        blobs[content_id(stdin)] = stdin
    if "node" not in where and not signed_by_node:
        raise Rejected("a job for another node must be signed by this node's key (the "
                       "worker runs it for the peer that submits it)",
                       slug="not_authorized", hint="use submitter, or where: self")
    return Prepared(env, job, blobs, where, signed_by_node,
                    int(limits.get("wall_ms", 30000)) / 1000 + 30)


def _argv0(req: dict[str, Any]) -> str:
    m = req.get("module")
    if isinstance(m, dict) and isinstance(m.get("path"), str):
        return Path(m["path"]).name or "module.wasm"
    return "module.wasm"


class LocalJobs:
    """Runs the local API's jobs for one node."""

    def __init__(self, node: Any) -> None:
        from plasmd.outgoing import Outgoing

        self.node = node
        self.out = Outgoing(node.identity)

    async def run(self, p: Prepared, run: JobRun, emit: Emit) -> dict[str, Any]:
        """Place and run a prepared job; the verified ``job_result`` record."""
        w = p.where
        if "node" in w:
            out = await self.here(p, run, emit)
        elif "peer" in w:
            from plasmd.localrun import names_self

            if names_self(self.node, w["peer"]):  # no QUIC hop to itself
                out = await self.here(p, run, emit)
            else:
                out = await self.peer(p, w["peer"], emit)
        else:
            from plasmd.placement import anywhere

            out = await anywhere(self, p, run, emit)
        from plasmd.result import Result

        return Result.from_outcome(out, p.manifest).record()

    async def here(self, p: Prepared, run: JobRun, emit: Emit) -> Any:
        """On this node's job threads, under its slots, queue and drain, with a
        remote job's admission, replay record and durability (``plasmd.localrun``)."""
        from plasmd.localrun import run_here

        return await run_here(self.node, p, run, emit)

    async def peer(self, p: Prepared, text: str, emit: Emit) -> Any:
        from plasmd.submit import parse_peer

        try:
            node_id, host, port = parse_peer(text)
        except PhaseError as e:
            raise rq.bad(f"where.peer: {e.message}") from None
        emit({"stage": "connecting", "node": node_id or f"{host}:{port}"})
        return await self.out.submit(host, port, node_id, p.manifest, p.blobs, p.timeout_s)

    async def close(self) -> None:
        await self.out.close()


def failure_record(e: BaseException) -> dict[str, Any]:
    """The error record for what ended a submit (a bug becomes ``internal``)."""
    if isinstance(e, PhaseError):
        return e.to_record()
    if isinstance(e, asyncio.CancelledError):
        return Cancelled("the job was cancelled").to_record()
    import traceback

    log.get().error("local_api.internal_error", error=repr(e),
                    traceback="".join(traceback.format_exception(e))[-4000:])
    return {"error": "internal", "message": f"internal error: {type(e).__name__}",
            "exit_code": 70}


__all__ = ["Caller", "Cancelled", "JobRun", "LocalJobs", "Prepared", "failure_record",
           "prepare"]
