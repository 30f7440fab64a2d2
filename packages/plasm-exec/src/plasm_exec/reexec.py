"""Re-execution check: run a receipt's module again on its inputs and compare.

``verify_receipt`` returns a ``Reexecuted`` or raises. It checks, in order:
the receipt envelope and signatures (and, given a keyring, that a trusted
worker signed it), that the receipt is bound to the manifest
(``phase_core.receipt.check_binding``: job id, module, stdin, deterministic
profile; a mismatch is ``BindingMismatch``, slug ``wrong_<field>``), that the
module and stdin are in the store, then re-runs under the receipt's limits and deterministic profile
and compares ``ended``, ``exit_code``, ``trap``, ``stdout``, ``stderr``, the
byte counts and — when the receipt says its fuel is exact — ``fuel_consumed``.
The first field that differs is named in the ``ReexecMismatch`` error.

A run the wall clock or the output fence ended cannot be reproduced byte for
byte; for those only ``ended`` is compared, and ``Reexecuted.partial`` is True.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from phase_core import documents, envelope, manifest, receipt
from phase_core.cas import ContentStore
from phase_core.errors import MissingInput, Rejected
from phase_core.timefmt import now as clock
from phase_core.trust import Keyring
from plasm_exec.api import Executor, run_spec_from_manifest

COMPARED = ("ended", "exit_code", "trap", "stdout", "stderr", "stdout_bytes", "stderr_bytes")


class ReexecMismatch(Rejected):
    slug = "reexec_mismatch"


@dataclass(frozen=True)
class Reexecuted:
    receipt_id: str
    job_id: str
    checked: tuple[str, ...]
    partial: bool
    rerun: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        return {"v": 1, "type": "reexecuted", "receipt": self.receipt_id, "job": self.job_id,
                "checked": list(self.checked), "partial": self.partial, "rerun": self.rerun}


def verify_receipt(envelope_obj: Any, *, manifest_obj: Any, cas: ContentStore,
                   keyring: Keyring | None = None, now: int | None = None,
                   executor: Executor | None = None) -> Reexecuted:
    """Re-execute the job a receipt describes; return what was checked or raise."""
    now = clock() if now is None else now
    rec = _verify_doc(envelope_obj, receipt.TYPE, receipt.ROLE, keyring, now)
    body = rec.body
    if manifest_obj is None:
        raise MissingInput("re-execution needs the receipt's job manifest (argv, env)",
                           hint="pass --manifest; `run --receipt r.json` writes "
                                "r.manifest.json beside it")
    menv = envelope.parse(manifest_obj)
    if menv.type != manifest.TYPE:
        raise Rejected(f"expected a job_manifest, got a {menv.type}", slug="wrong_type")
    envelope.check_signatures(menv)
    manifest.BODY(menv.body, "job_manifest")
    mb = menv.body
    # the receipt must be for this manifest: job id, module, stdin, deterministic profile
    receipt.check_binding(body, job_id=menv.id, manifest_body=mb)
    wasm = cas.read(body["module"])
    stdin = cas.verify(body["stdin"]) if body["stdin"] != receipt.EMPTY_ID else None
    ex = executor or Executor(cas.root.parent)
    prog = ex.load(wasm, body["module"])
    spec = run_spec_from_manifest(mb, body["limits"])
    spec.deterministic = body["deterministic"]
    res = ex.run(prog, spec, stdin=stdin)
    o = res.outcome
    got = {"ended": o.ended, "exit_code": o.exit_code, "trap": o.trap,
           "stdout": res.stdout_id, "stderr": res.stderr_id,
           "stdout_bytes": res.stdout_bytes, "stderr_bytes": res.stderr_bytes,
           "fuel_consumed": o.fuel_consumed}
    partial = body["ended"] in ("timeout", "output_limit")
    fields: tuple[str, ...] = ("ended",) if partial else COMPARED
    if not partial and body["fuel_exact"]:
        fields += ("fuel_consumed",)
    for f in fields:
        if got[f] != body[f]:
            why = "" if body["deterministic"] else \
                " (the run was not deterministic; clocks and randomness may differ)"
            raise ReexecMismatch(f"re-execution differs in {f}: receipt says {body[f]!r}, "
                                 f"re-run gave {got[f]!r}{why}", field=f,
                                 receipt_value=body[f], rerun_value=got[f])
    return Reexecuted(rec.id, body["job"], fields, partial, got)


def _verify_doc(obj: Any, doc_type: str, role: str, keyring: Keyring | None,
                now: int) -> documents.Verified:
    if keyring is None:  # signatures and schema only: trust its own signers
        env = envelope.parse(obj)
        keyring = Keyring()
        for i, key in enumerate(envelope.signer_keys(env)):
            keyring = keyring.with_key(f"signer-{i}", key, [role])
    return documents.verify(obj, documents.Policy(keyring, now, expected_type=doc_type))
