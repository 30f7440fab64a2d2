"""The test-only liar mode: reachable through PHASE_TEST_LIAR=1 only, never a flag
or a config key; its receipts verify, its output is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from phase_core import receipt
from phase_core.canonical import content_id
from phase_core.identity import Identity
from plasmd import cli, config, liar
from plasmd.submit import check_outcome, make_manifest


def test_only_the_environment_variable_turns_it_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(liar.ENV, raising=False)
    assert not liar.enabled()
    for value in ("0", "", "yes", "true"):
        monkeypatch.setenv(liar.ENV, value)
        assert not liar.enabled()
    monkeypatch.setenv(liar.ENV, "1")
    assert liar.enabled()


def test_no_option_or_config_key_reaches_it() -> None:
    assert "liar" not in (cli.__doc__ or "").lower()
    assert not any("liar" in k for k in config.KEYS)


def test_a_lie_is_signed_and_verifies_but_names_flipped_bytes(tmp_path: Path) -> None:
    from phase_core.cas import ContentStore
    from plasm_exec.api import Executor
    from plasm_exec.job import execute_job
    from tests.plasmd.conftest import HELLO

    me, worker = Identity.generate(), Identity.generate()
    module = HELLO.read_bytes()
    env = make_manifest(me, module, b"abc", argv=["hello.wasm"])
    cas = ContentStore(tmp_path / "cas")
    cas.put_bytes(module)
    cas.put_bytes(b"abc")
    from phase_core import timefmt

    honest = execute_job(env, executor=Executor(None), cas=cas, identity=worker,
                         now=timefmt.now(), store_outputs=False)
    lie = liar.lie(honest, worker)
    assert honest.result.stdout == b"cba"
    assert lie.result.stdout == liar.flip(b"cba") != b"cba"
    assert lie.receipt["body"]["stdout"] == content_id(lie.result.stdout)
    # the submitter's checks all pass: only a second opinion catches it
    out = check_outcome(worker.node_id, honest.job_id, env["body"], lie.receipt,
                        lie.result.stdout, lie.result.stderr)
    assert receipt.TYPE == out.receipt["type"]
    assert liar.flip(b"") == b"\xff"
