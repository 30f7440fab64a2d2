"""`plasm-exec job` as a pipeline stage: which records it runs, what it writes.

It runs (docs/pipeline.md):

- ``verified`` records of doc_type ``job_manifest`` (phase-verify's output,
  usually after phase-fetch put the inputs in the store): the ``envelope`` is
  verified again here, the record is a claim, not a proof;
- bare signed ``job_manifest`` envelopes;
- ``job`` records: ``{"manifest": {...}, "module_path": ..., "stdin_path": ...}``.

``blob`` records are phase-fetch's news that an input is in the store; they
are dropped like any other type. Upstream ``error`` records are passed on.
For each job it writes a ``job_result`` record (the signed receipt under
``envelope``); a job that ran but did not exit 0 is followed by an ``error``
record ``job_failed`` (exit_code 1), so the last stage of a pipeline fails too.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import IO, Any

from phase_core import exitcodes, log, manifest
from phase_core.cli.jsonl import write_record
from phase_core.cli.pipeline import Stage
from phase_core.errors import InputError, IOFailure, Malformed, MissingInput, PhaseError
from plasm_exec.job import JobResult

JOB = "job"


def acts_on(rec: dict[str, Any]) -> bool:
    rtype = rec.get("type")
    if rtype == "verified":
        return rec.get("doc_type") == manifest.TYPE
    return rtype == JOB or (rtype == manifest.TYPE and "signatures" in rec)


def job_of(rec: dict[str, Any]) -> tuple[Any, Path | None, Path | None]:
    """(the manifest envelope, module path, stdin path) of a record acts_on() took."""
    rtype = rec.get("type")
    if rtype == "verified":
        env = rec.get("envelope")
        if not isinstance(env, dict):
            raise Malformed("a verified job_manifest record without its envelope",
                            hint="pass the record phase-verify wrote, unmodified")
        return env, None, None
    if rtype == JOB:
        return (rec.get("manifest"), _path(rec, "module_path"), _path(rec, "stdin_path"))
    return rec, None, None


def _path(rec: dict[str, Any], key: str) -> Path | None:
    value = rec.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value or "\0" in value:
        raise Malformed(f"{key} must be a file path")
    return Path(value)


def failed(res: JobResult) -> dict[str, Any] | None:
    """The ``job_failed`` error record for a job that did not exit 0, else None."""
    o = res.result.outcome
    if o.ended == "exited" and o.exit_code == 0:
        return None
    how = f"exited with {o.exit_code}" if o.ended == "exited" else f"ended: {o.ended}"
    return {"v": 1, "type": "error", "error": "job_failed",
            "message": f"job {res.job_id} ran and {how}", "exit_code": exitcodes.REJECTED,
            "job": res.job_id, "ended": o.ended}


def open_jobs(path: str | None) -> IO[bytes]:
    """The job records' source: the file, or stdin for none or "-"."""
    if not path or path == "-":
        return sys.stdin.buffer
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise MissingInput(f"no such file: {path}") from None
    except IsADirectoryError:
        raise InputError(f"{path} is a directory, not a file of job records") from None
    except OSError as e:
        raise IOFailure(f"cannot read {path}: {e.strerror}") from None


def run_jobs(src: IO[bytes], out: IO[str] | None, execute: Any) -> int:
    """Run every job record of ``src``; ``execute(manifest, module_path, stdin_path)``
    returns a JobResult or raises. Returns the exit status."""
    lg = log.get()
    stage = Stage("plasm.job", out, acts_on)
    for lineno, rec in stage.read(src):
        try:
            if isinstance(rec, PhaseError):
                raise rec
            res: JobResult = execute(*job_of(rec))
            fail = failed(res)
            if out is not None:
                write_record(res.record(), out)
                if fail is not None:
                    write_record({**fail, "line": lineno}, out)
            if fail is not None:
                lg.warning("plasm.job.guest_failed", line=lineno, job=res.job_id,
                           ended=fail["ended"])
                stage.note(exitcodes.REJECTED)
        except PhaseError as e:
            lg.error("plasm.job.failed", line=lineno, **e.to_record())
            if out is not None:
                write_record({"v": 1, "type": "error", "line": lineno, **e.to_record()}, out)
            stage.note(e.exit_code)
    return stage.finish("job (a verified job_manifest, a signed job_manifest or a job record)")
