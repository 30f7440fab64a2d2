"""Run one signed job manifest: verify it, resolve inputs from the CAS, run, sign a receipt.

``execute_job`` is what ``plasm-exec job`` does per record and what plasmd calls
per job. It verifies before it runs anything: the envelope, every signature,
the body schema and the validity window, and — when a keyring is given — that
a trusted ``job-submitter`` signed it. Limits are clamped to the operator's
ceilings; the receipt states the limits in force.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from phase_core import documents, envelope, manifest
from phase_core.cas import ContentStore
from phase_core.errors import DigestMismatch, MissingInput
from phase_core.identity import Identity
from phase_core.limits import clamp
from phase_core.trust import Keyring
from plasm_exec.api import Executor, RunResult, run_spec_from_manifest
from plasm_exec.receipts import receipt_body, sign_receipt

INLINE_MAX_BYTES = 64 << 10


@dataclass
class JobResult:
    job_id: str
    receipt: dict[str, Any]  # the signed envelope
    result: RunResult

    def record(self, inline_max: int = INLINE_MAX_BYTES) -> dict[str, Any]:
        o = self.result.outcome
        body = self.receipt["body"]
        rec: dict[str, Any] = {"v": 1, "type": "job_result", "job": self.job_id,
                               "ended": o.ended, "exit_code": o.exit_code,
                               "stdout_id": body["stdout"], "stderr_id": body["stderr"],
                               "stdout_bytes": body["stdout_bytes"],
                               "stderr_bytes": body["stderr_bytes"],
                               "envelope": self.receipt}
        for name, data in (("stdout", self.result.stdout), ("stderr", self.result.stderr)):
            if data is not None and len(data) <= inline_max:
                rec[f"{name}_b64"] = base64.b64encode(data).decode("ascii")
        return rec


def verify_manifest(obj: Any, *, keyring: Keyring | None, now: int) -> documents.Verified:
    """The verified manifest. Without a keyring, its own signers are taken as submitters
    (signatures, schema and validity window are still checked)."""
    if keyring is None:
        env = envelope.parse(obj)
        keyring = Keyring()
        for i, key in enumerate(envelope.signer_keys(env)):
            keyring = keyring.with_key(f"signer-{i}", key, [manifest.ROLE])
    return documents.verify(obj, documents.Policy(keyring, now,
                                                  expected_type=manifest.TYPE))


def job_limits(body: dict[str, Any], ceilings: dict[str, int] | None) -> dict[str, int]:
    """The limits a job runs under: its manifest's, clamped to the operator's ceilings."""
    return clamp(body["limits"], ceilings) if ceilings else dict(body["limits"])


def execute_job(manifest_obj: Any, *, identity: Identity, **kw: Any) -> JobResult:
    """Run one job and sign its receipt with ``identity``; ``kw`` as for ``run_job``."""
    job_id, rbody, result = run_job(manifest_obj, worker=identity.node_id, **kw)
    return JobResult(job_id, sign_receipt(rbody, identity), result)


def run_job(manifest_obj: Any, *, worker: str, executor: Executor, cas: ContentStore,
            now: int, keyring: Keyring | None = None,
            ceilings: dict[str, int] | None = None, module_path: Path | None = None,
            stdin_path: Path | None = None, store_outputs: bool = True,
            verified: documents.Verified | None = None,
            cancel: threading.Event | None = None,
            stdin_blob: Callable[[str], Path] | None = None
            ) -> tuple[str, dict[str, Any], RunResult]:
    """Run one job: its id, its receipt's body (unsigned, naming ``worker``) and the
    run. A node's job process runs this; the node, which alone holds the key, signs.
    ``verified``: the caller already verified this manifest (plasmd).
    ``stdin_blob``: the stdin blob's checked path (default: ``cas.verify``, which
    re-hashes it; plasmd hashes each blob once per file identity).

    ``cancel``: set it from another thread to stop the guest; this then raises
    ``phase_core.errors.Interrupted`` and no receipt is made.
    """
    from phase_core.timefmt import now as clock

    if verified is None:
        verified = verify_manifest(manifest_obj, keyring=keyring, now=now)
    body = verified.body
    if module_path is not None:
        cas.put_file(Path(module_path), expected=body["module"])
    if stdin_path is not None:
        if body["stdin"] is None:
            raise DigestMismatch("a stdin file was given but the manifest names no stdin")
        cas.put_file(Path(stdin_path), expected=body["stdin"])
    prog = executor.cached(body["module"])
    if prog is None:
        if not cas.has(body["module"]):
            raise MissingInput(f"module {body['module']} is not in the store",
                               hint="fetch it first (phase-fetch), or give module_path")
        prog = executor.load(cas.read(body["module"]), body["module"])
    limits = job_limits(body, ceilings)
    spec = run_spec_from_manifest(body, limits)
    stdin = None
    if body["stdin"] is not None:
        stdin = (stdin_blob or cas.verify)(body["stdin"])  # checked against its id
    result = executor.run(prog, spec, stdin=stdin, cancel=cancel, stdin_id=body["stdin"])
    if store_outputs:
        for data in (result.stdout, result.stderr):
            if data is not None:
                cas.put_bytes(data)
    rbody = receipt_body(job_id=verified.id, module_id=body["module"], result=result,
                         limits=limits, deterministic=spec.deterministic,
                         runtime=executor.runtime_info, worker=worker, completed=clock())
    return verified.id, rbody, result
