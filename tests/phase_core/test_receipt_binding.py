"""``receipt.check_binding``: a genuine receipt is for one job, worker and output only."""

from __future__ import annotations

from typing import Any

import pytest

from phase_core import manifest, receipt
from phase_core.canonical import content_id
from phase_core.errors import Rejected
from phase_core.receipt import EMPTY_ID, BindingMismatch, check_binding

WORKER = "ab" * 32
JOB = content_id(b"the job")


def bodies(stdin: bytes | None = b"in") -> tuple[dict[str, Any], dict[str, Any]]:
    mb = manifest.build(module=content_id(b"module"),
                        stdin=content_id(stdin) if stdin is not None else None, now=0)
    rb = {"job": JOB, "module": mb["module"], "stdin": mb["stdin"] or EMPTY_ID,
          "stdout": content_id(b"out"), "stdout_bytes": 3, "stderr": content_id(b""),
          "stderr_bytes": 0, "deterministic": False, "worker": WORKER}
    return mb, rb


def test_a_matching_receipt_passes() -> None:
    mb, rb = bodies()
    check_binding(rb, job_id=JOB, manifest_body=mb, worker=WORKER, stdout=b"out", stderr=b"")
    check_binding(rb, job_id=JOB, manifest_body=mb)  # job only (offline, no output at hand)
    mb, rb = bodies(stdin=None)
    assert rb["stdin"] == content_id(b"")
    check_binding(rb, job_id=JOB, manifest_body=mb)


@pytest.mark.parametrize(("field", "value", "slug"), [
    ("worker", "cd" * 32, "wrong_worker"),
    ("job", content_id(b"another job"), "wrong_job"),
    ("module", content_id(b"another module"), "wrong_module"),
    ("stdin", content_id(b"another stdin"), "wrong_stdin"),
    ("stdin", EMPTY_ID, "wrong_stdin"),
    ("deterministic", True, "wrong_deterministic"),
    ("stdout", content_id(b"oux"), "wrong_stdout"),
    ("stdout_bytes", 4, "wrong_stdout"),
    ("stderr", content_id(b"e"), "wrong_stderr"),
    ("stderr_bytes", 1, "wrong_stderr"),
])
def test_each_mismatch_is_named(field: str, value: object, slug: str) -> None:
    mb, rb = bodies()
    rb[field] = value
    with pytest.raises(BindingMismatch) as ei:
        check_binding(rb, job_id=JOB, manifest_body=mb, worker=WORKER, stdout=b"out",
                      stderr=b"")
    assert isinstance(ei.value, Rejected) and ei.value.exit_code == 1
    assert ei.value.slug == slug and ei.value.details["field"] == field


def test_a_manifest_without_stdin_binds_the_empty_stream() -> None:
    mb, rb = bodies(stdin=None)
    rb["stdin"] = content_id(b"smuggled")
    with pytest.raises(BindingMismatch) as ei:
        check_binding(rb, job_id=JOB, manifest_body=mb)
    assert ei.value.slug == "wrong_stdin"


def test_outputs_not_given_are_not_checked() -> None:
    mb, rb = bodies()
    rb["stdout"] = content_id(b"anything")
    check_binding(rb, job_id=JOB, manifest_body=mb, worker=WORKER)
    assert receipt.EMPTY_ID == content_id(b"")
