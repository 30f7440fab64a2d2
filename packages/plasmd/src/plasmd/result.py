"""A job's result as the Python client returns it (docs/python-client.md)."""

from __future__ import annotations

import base64
from typing import Any

from phase_core.errors import PhaseError
from plasmd.warmsubmit import FENCE_EXIT

__all__ = ["NodeError", "Result", "exit_status"]


class NodeError(PhaseError):
    """A failure the node reported (an ``error`` record of the local node API): the
    same slug and exit code the command-line tools use (docs/local-api.md)."""

    def __init__(self, record: dict[str, Any]) -> None:
        super().__init__(str(record.get("message", "the node reported an error")),
                         slug=str(record.get("error", "error")), hint=record.get("hint"))
        code = record.get("exit_code")
        self.exit_code = code if isinstance(code, int) and 1 <= code <= 255 else 1
        self.job: str | None = record.get("job")




def exit_status(ended: str, exit_code: int | None) -> int:
    """The status a tool exits with for this outcome (as ``plasm-exec run``)."""
    if ended == "exited" and exit_code is not None:
        return exit_code
    return FENCE_EXIT[ended]


class Result:
    """One job's outcome: the guest's output and the worker's signed receipt.

    ``stdout``/``stderr``: the guest's bytes; ``receipt``: the signed receipt
    envelope; ``worker``: the node id that ran it; ``job``: the job id;
    ``manifest``: the signed job manifest; ``ended``/``exit_code``: how the guest
    ended (``status`` is what a tool would exit with)."""

    __slots__ = ("ended", "exit_code", "job", "manifest", "receipt", "stderr", "stdout",
                 "worker")

    def __init__(self, *, stdout: bytes, stderr: bytes, receipt: dict[str, Any], worker: str,
                 manifest: dict[str, Any] | None = None) -> None:
        body = receipt["body"]
        self.stdout = stdout
        self.stderr = stderr
        self.receipt = receipt
        self.worker = worker
        self.manifest = manifest
        self.job: str = body["job"]
        self.ended: str = body["ended"]
        self.exit_code: int | None = body["exit_code"]

    def __repr__(self) -> str:
        return (f"Result(job={self.job[:23]}…, worker={self.worker[:16]}…, "
                f"ended={self.ended}, exit_code={self.exit_code}, "
                f"stdout={len(self.stdout)} bytes)")

    @property
    def status(self) -> int:
        return exit_status(self.ended, self.exit_code)

    @property
    def ok(self) -> bool:
        return self.ended == "exited" and self.exit_code == 0

    def verify(self, workers: list[str] | None = None) -> dict[str, Any]:
        """Check the receipt here and now: signed by ``self.worker`` (which must be one
        of ``workers`` when given), and bound to this job's manifest (job id, module,
        stdin, profile) and to these stdout and stderr bytes. Returns the verified
        receipt body; raises a ``phase_core.errors.Rejected`` (``bad_signature``,
        ``wrong_stdout``, …) otherwise."""
        from phase_core import documents, receipt, timefmt
        from phase_core.errors import UntrustedSigner
        from phase_core.trust import Keyring

        if workers is not None and self.worker not in workers:
            raise UntrustedSigner(f"the worker {self.worker[:16]}… is not one of the "
                                  "trusted workers")
        kr = Keyring().with_key("worker", self.worker, [receipt.ROLE])
        v = documents.verify(self.receipt, documents.Policy(kr, timefmt.now(),
                                                            expected_type=receipt.TYPE))
        if self.manifest is not None:
            from phase_core import envelope

            m = envelope.parse(self.manifest)
            receipt.check_binding(v.body, job_id=m.id, manifest_body=m.body,
                                  worker=self.worker, stdout=self.stdout, stderr=self.stderr)
        else:
            receipt.check_binding(v.body, job_id=self.job,
                                  manifest_body={"module": v.body["module"],
                                                 "stdin": v.body["stdin"],
                                                 "deterministic": v.body.get("deterministic",
                                                                             False)},
                                  worker=self.worker, stdout=self.stdout, stderr=self.stderr)
        return v.body

    def record(self) -> dict[str, Any]:
        """The ``job_result`` record (docs/schemas/job_result.schema.json)."""
        b = self.receipt["body"]
        return {"v": 1, "type": "job_result", "worker": self.worker, "job": b["job"],
                "ended": b["ended"], "exit_code": b["exit_code"],
                "stdout_id": b["stdout"], "stderr_id": b["stderr"],
                "stdout_bytes": b["stdout_bytes"], "stderr_bytes": b["stderr_bytes"],
                "stdout_b64": base64.b64encode(self.stdout).decode(),
                "stderr_b64": base64.b64encode(self.stderr).decode(),
                "verified": True, "envelope": self.receipt}

    @classmethod
    def from_record(cls, rec: dict[str, Any], manifest: dict[str, Any] | None = None
                    ) -> Result:
        """From a ``job_result`` record (the local node API's answer)."""
        try:
            return cls(stdout=base64.b64decode(rec.get("stdout_b64", ""), validate=True),
                       stderr=base64.b64decode(rec.get("stderr_b64", ""), validate=True),
                       receipt=rec["envelope"], worker=str(rec["worker"]),
                       manifest=manifest)
        except (KeyError, TypeError, ValueError) as e:
            from phase_core.errors import ProtocolViolation

            raise ProtocolViolation(f"the node sent a job_result that is not one: {e!r}"
                                    ) from None

    @classmethod
    def from_outcome(cls, out: Any, manifest: dict[str, Any] | None = None) -> Result:
        """From ``plasmd.submit.Outcome`` (verified by ``check_outcome``)."""
        return cls(stdout=out.stdout, stderr=out.stderr, receipt=out.receipt,
                   worker=out.worker, manifest=manifest)
