"""The cancel API plasmd uses: Executor.run(cancel=...) and execute_job(cancel=...)."""

from __future__ import annotations

import threading

import pytest

from phase_core import envelope, manifest
from phase_core.cas import ContentStore
from phase_core.errors import Interrupted
from phase_core.identity import Identity
from phase_core.limits import DEFAULT_LIMITS
from plasm_exec.api import RunSpec
from plasm_exec.job import execute_job

NOW = 1_800_000_000


def _cancel_when_started(ctl, cancel: threading.Event) -> threading.Thread:
    t = threading.Thread(target=lambda: (ctl.started.wait(), cancel.set()))
    t.start()
    return t


def test_run_cancel_raises_interrupted(executor, wasm):
    prog = executor.load(wasm["spin"])
    ctl = executor.new_control()
    cancel = threading.Event()
    t = _cancel_when_started(ctl, cancel)
    with pytest.raises(Interrupted) as ei:
        executor.run(prog, RunSpec(argv=["g"], limits=dict(DEFAULT_LIMITS)), control=ctl,
                     cancel=cancel)
    t.join()
    assert (ei.value.slug, ei.value.exit_code) == ("interrupted", 130)
    assert ctl.stop_reason == "interrupted"
    # the executor is still usable afterwards
    res = executor.run(executor.load(wasm["cat"]), RunSpec(argv=["g"]), stdin=b"ok")
    assert res.stdout == b"ok"


def test_unset_cancel_changes_nothing(executor, wasm):
    res = executor.run(executor.load(wasm["cat"]), RunSpec(argv=["g"]), stdin=b"x",
                       cancel=threading.Event())
    assert (res.outcome.ended, res.stdout) == ("exited", b"x")


def test_execute_job_cancel_signs_nothing(tmp_path, executor, wasm, monkeypatch):
    from plasm_exec import job as job_mod

    signed: list[object] = []
    monkeypatch.setattr(job_mod, "sign_receipt", lambda *a, **k: signed.append(a))
    cas = ContentStore(tmp_path / "cas")
    mod = cas.put_bytes(wasm["spin"])
    sub = Identity.generate()
    body = manifest.build(module=mod, stdin=None, now=NOW)
    man = envelope.sign(manifest.TYPE, body, [sub])
    cancel = threading.Event()
    cancel.set()  # cancelled before it even starts: still a prompt Interrupted
    with pytest.raises(Interrupted):
        execute_job(man, executor=executor, cas=cas, identity=Identity.generate(), now=NOW,
                    cancel=cancel)
    assert signed == []
