"""A lying worker, for tests only: flip the guest's output bytes and sign them.

Reachable only when the environment of ``plasmd start`` sets ``PHASE_TEST_LIAR=1``
(no command-line option, no config key turns it on). The node then runs every job
honestly, flips every byte of the guest's stdout (an empty stdout becomes one
byte), and signs a receipt naming the flipped bytes' content id and size. Such a
receipt verifies: signature, worker, job, module, stdin and output digests all
check. Only a second opinion catches it, which is what the dispatcher's
``--replicas``/``--quorum`` and ``--settle=reexec`` are for (docs/dispatch.md).
The node logs ``node.test_liar`` at warning level on every lie.
"""

from __future__ import annotations

import os
from typing import Any

from phase_core import log
from phase_core.canonical import content_id

ENV = "PHASE_TEST_LIAR"


def enabled() -> bool:
    return os.environ.get(ENV) == "1"


def flip(data: bytes) -> bytes:
    """Every byte inverted; an empty output becomes one byte, so it differs too."""
    return bytes(b ^ 0xFF for b in data) if data else b"\xff"


def lie(result: Any, identity: Any) -> Any:
    """A ``plasm_exec.job.JobResult`` whose stdout is flipped and whose receipt,
    re-signed by ``identity``, names the flipped bytes."""
    from plasm_exec.api import RunResult
    from plasm_exec.job import JobResult
    from plasm_exec.receipts import sign_receipt

    r = result.result
    out = flip(r.stdout or b"")
    body = dict(result.receipt["body"], stdout=content_id(out), stdout_bytes=len(out))
    log.get().warning("node.test_liar", job=result.job_id, env=ENV)
    forged = RunResult(r.outcome, r.stdin_id, body["stdout"], r.stderr_id, len(out),
                       r.stderr_bytes, out, r.stderr)
    return JobResult(result.job_id, sign_receipt(body, identity), forged)
