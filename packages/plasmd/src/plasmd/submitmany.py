"""``plasmd submit --jobs=FILE``: many signed jobs through a ``Pool``.

The input is JSON lines (docs/pipeline.md): ``job`` records (``manifest`` with
``module_path``/``stdin_path``), bare signed job manifests or phase-verify's
``verified`` job manifests; a module or stdin without a path is read from the
home's content store. Every manifest must be signed by this home's node key
(the worker runs a job only for the peer that signed it).

One ``job_result`` record per job, in the order the jobs end; a job that ran but
did not exit 0 is followed by an ``error`` record ``job_failed`` (exit_code 1),
a job that did not run by an ``error`` record with its own slug, and upstream
``error`` records are passed on. The exit status is the worst of them (0 when
every job exited 0). The input is read only as fast as results are written,
with at most ``--max-in-flight`` jobs in memory.
"""

from __future__ import annotations

import asyncio
import base64
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any

from phase_core import exitcodes, log
from phase_core.cli.jsonl import write_record
from phase_core.cli.pipeline import Stage
from phase_core.errors import PhaseError
from phase_core.identity import Identity
from plasmd.dispatchio import BlobCache, Reader, read_jobs
from plasmd.pool import Job, Pool
from plasmd.submit import Outcome


def job_result(out: Outcome) -> dict[str, Any]:
    """The ``job_result`` record of a verified outcome (as ``plasmd submit --json``)."""
    b = out.body
    return {"v": 1, "type": "job_result", "worker": out.worker, "job": b["job"],
            "ended": b["ended"], "exit_code": b["exit_code"], "stdout_id": b["stdout"],
            "stderr_id": b["stderr"], "stdout_bytes": b["stdout_bytes"],
            "stderr_bytes": b["stderr_bytes"],
            "stdout_b64": base64.b64encode(out.stdout).decode(),
            "stderr_b64": base64.b64encode(out.stderr).decode(), "envelope": out.receipt}


async def run(identity: Identity, peers: list[str], src: IO[bytes], out: IO[str] | None,
              *, cas: Any, max_in_flight: int) -> int:
    write_lock = threading.RLock()

    def emit(rec: dict[str, Any]) -> None:
        if out is not None:
            with write_lock:
                write_record(rec, out)

    stage = _Stage("plasmd.submit", out, _acts_on, forward=emit)
    stage.lock = write_lock
    lines: dict[int, int] = {}  # the map's index → input line

    async def jobs() -> AsyncIterator[Job]:
        # a daemon thread: a read blocked on a quiet stdin never holds up Ctrl-C
        reader = Reader(read_jobs(stage, src, BlobCache(cas)))
        while (item := await reader.next()) is not None:
            lineno, job = item
            if isinstance(job, PhaseError):
                log.get().error("submit.bad_job", line=lineno, **job.to_record())
                emit({"v": 1, "type": "error", "line": lineno, **job.to_record()})
                stage.note(job.exit_code)
                continue
            lines[len(lines)] = lineno
            yield job

    async with Pool(identity, peers, max_in_flight=max_in_flight) as pool:
        async for d in pool.map(jobs()):
            lineno = lines.pop(d.index, 0)
            if d.error is not None:
                e = d.error
                log.get().warning("submit.job_failed", line=lineno, job=d.job.id,
                                  **e.to_record())
                emit({"v": 1, "type": "error", "line": lineno, "job": d.job.id,
                      **e.to_record()})
                stage.note(e.exit_code)
                continue
            assert d.outcome is not None
            emit(job_result(d.outcome))
            b = d.outcome.body
            if not (b["ended"] == "exited" and b["exit_code"] == 0):
                how = (f"exited with {b['exit_code']}" if b["ended"] == "exited"
                       else f"ended: {b['ended']}")
                emit({"v": 1, "type": "error", "error": "job_failed",
                      "message": f"job {b['job']} ran and {how}",
                      "exit_code": exitcodes.REJECTED, "job": b["job"], "ended": b["ended"],
                      "line": lineno})
                stage.note(exitcodes.REJECTED)
        log.get().info("submit.jobs_done", **{k: int(v) for k, v in pool.stats.items()})
    return stage.finish("job (a job record, a signed job_manifest or a verified one)")


class _Stage(Stage):
    """The reader thread passes upstream errors on while the loop notes results."""

    lock: Any = None

    def pass_error(self, rec: dict[str, Any]) -> None:
        with self.lock:
            super().pass_error(rec)

    def note(self, code: int) -> None:
        with self.lock:
            super().note(code)


def _acts_on(rec: dict[str, Any]) -> bool:
    from plasm_exec.jobpipe import acts_on

    return bool(acts_on(rec))


def main(home: Path, args: dict[str, Any], identity: Identity, peer: str) -> int:
    from phase_core import home as homes
    from phase_core.cas import ContentStore
    from plasm_exec.jobpipe import open_jobs

    try:
        n = int(args["--max-in-flight"])
    except ValueError:
        n = 0
    if n < 1:
        from phase_core.errors import UsageError

        raise UsageError("--max-in-flight must be a positive integer")
    src = open_jobs(args["--jobs"])
    out = None if args["--quiet"] else sys.stdout
    cas = ContentStore(homes.cas_path(home), create=False)  # read only: read-only homes work
    return asyncio.run(run(identity, [peer], src, out, cas=cas, max_in_flight=n))
