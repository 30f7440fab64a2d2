"""The Python client without a daemon (docs/python-client.md): sign the job here,
then run it in this process through plasm-exec's library, or send it straight to
the peer over QUIC/Noise (``plasmd.submit``), or to a node found by its
capabilities (listed peers, then discovery)."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

from phase_core.errors import MissingInput, PhaseError, Unavailable
from plasmd.result import Result


def identity(home: str | Path, key: Any) -> Any:
    """The signing key: ``key`` (an Identity or a key file), else the home's node key."""
    from phase_core import identity as identities
    from phase_core.home import key_path

    home = Path(home)
    if key is not None and not isinstance(key, str | Path):
        return key
    path = Path(key) if key is not None else key_path(home)
    try:
        return identities.load(path)
    except MissingInput as e:
        raise MissingInput(f"no key to sign the job with at {path}",
                           hint=f"run `plasmd init --home={home}`, or pass key=") from e


def _bytes(home: Path, spec: dict[str, Any] | None) -> bytes | None:
    if spec is None:
        return None
    if "b64" in spec:
        return base64.b64decode(spec["b64"])
    if "path" in spec:
        try:
            return Path(spec["path"]).read_bytes()
        except FileNotFoundError:
            raise MissingInput(f"no such file: {spec['path']}") from None
    from phase_core.cas import ContentStore
    from phase_core.home import cas_path

    cas = ContentStore(cas_path(home))
    if not cas.has(spec["content_id"]):
        raise MissingInput(f"{spec['content_id']} is not in the store of {home}")
    return bytes(cas.read(spec["content_id"]))


def sign(req: dict[str, Any], ident: Any, module: bytes, stdin: bytes | None
         ) -> dict[str, Any]:
    """The signed job manifest for a submit request's fields."""
    from phase_core.limits import DEFAULT_LIMITS
    from plasmd.submit import make_manifest

    caps = (req.get("where") or {}).get("capabilities")
    return make_manifest(ident, module, stdin,
                         argv=[req.get("argv0", "module.wasm"), *req.get("args", [])],
                         env=req.get("env", {}),
                         limits={**DEFAULT_LIMITS, **req.get("limits", {})},
                         requirements=dict(caps) if caps else None,
                         deterministic=bool(req.get("deterministic", False)))


def signed_request(req: dict[str, Any], ident: Any) -> dict[str, Any]:
    """A submit request carrying a manifest signed here (inline bytes only)."""
    module = base64.b64decode(req["module"]["b64"])
    stdin = base64.b64decode(req["stdin"]["b64"]) if req.get("stdin") else None
    out = {k: v for k, v in req.items()
           if k not in ("args", "argv0", "env", "limits", "deterministic")}
    out["manifest"] = sign(req, ident, module, stdin)
    return out


def run_here(home: Path, ident: Any, env: dict[str, Any], module: bytes,
             stdin: bytes | None) -> Any:
    """plasm-exec's library, in this process; the receipt signed by ``ident``."""
    from phase_core import timefmt
    from plasm_exec.api import Executor, run_spec_from_manifest
    from plasm_exec.job import verify_manifest
    from plasm_exec.receipts import receipt_body, sign_receipt
    from plasmd.submit import check_outcome

    verified = verify_manifest(env, keyring=None, now=timefmt.now())
    body = verified.body
    ex = Executor(home if home.is_dir() else None)
    prog = ex.load(module, body["module"])
    spec = run_spec_from_manifest(body)
    res = ex.run(prog, spec, stdin=stdin)
    rbody = receipt_body(job_id=verified.id, module_id=body["module"], result=res,
                         limits=spec.limits, deterministic=spec.deterministic,
                         runtime=ex.runtime_info, worker=ident.node_id,
                         completed=timefmt.now())
    return check_outcome(ident.node_id, verified.id, body, sign_receipt(rbody, ident),
                         res.stdout or b"", res.stderr or b"")


async def run(home: str | Path, key: Any, req: dict[str, Any], timeout_s: float,
              on_progress: Any = None) -> Result:
    from plasmd import submit as submits

    home = Path(home)
    ident = identity(home, key)
    module = _bytes(home, req["module"])
    assert module is not None
    stdin = _bytes(home, req.get("stdin"))
    env = sign(req, ident, module, stdin)
    blobs = {env["body"]["module"]: module}
    if stdin is not None:
        blobs[env["body"]["stdin"]] = stdin
    if on_progress is not None:  # as the local node API's first answer
        from phase_core import envelope

        on_progress({"v": 1, "type": "job_accepted", "job": envelope.parse(env).id,
                     "submitter": ident.node_id, "manifest": env})
    deadline = int(env["body"]["limits"]["wall_ms"]) / 1000 + timeout_s
    where = req.get("where") or {"node": "self"}
    if "peer" in where:
        node_id, host, port = submits.parse_peer(where["peer"])
        out = await submits.submit(ident, host, port, env, blobs, expected_node_id=node_id,
                                   timeout_s=deadline)
    elif "capabilities" in where:
        out = await _anywhere(ident, where, env, blobs, deadline)
    else:
        out = await asyncio.to_thread(run_here, home, ident, env, module, stdin)
    return Result.from_outcome(out, env)


async def _anywhere(ident: Any, where: dict[str, Any], env: dict[str, Any],
                    blobs: dict[str, bytes], deadline: float) -> Any:
    """Listed peers first (the worker checks the manifest's requirements), then
    discovery (``submit_anywhere``)."""
    from plasmd import submit as submits

    for text in where.get("peers", []):
        node_id, host, port = submits.parse_peer(text)
        try:
            return await submits.submit(ident, host, port, env, blobs,
                                        expected_node_id=node_id, timeout_s=deadline)
        except PhaseError as e:
            from plasmd.placement import _skippable

            if not _skippable(e):
                raise
    via = where.get("via", "both" if where.get("bootstrap") else "mdns")
    if via == "none":
        raise Unavailable("no listed node accepted the job", hint="list more peers")
    return await submits.submit_anywhere(
        ident, env, blobs, via=via, bootstrap=list(where.get("bootstrap", [])),
        interfaces=where.get("interfaces") or None,
        discover_timeout_s=where.get("discover_timeout_ms", 5000) / 1000,
        timeout_s=deadline)
