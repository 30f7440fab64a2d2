"""phase-verify over the checked-in vectors (the issue's Must-show list)."""

import json
import subprocess
import sys

import pytest

from phase_verify import cli
from tests.conftest import VECTORS, script

EXIT = {"malformed": 65, "too_large": 65}
VALID = sorted((VECTORS / "valid").glob("*.json"))
INVALID = sorted((VECTORS / "invalid").glob("*.json"))


def test_vectors_are_reproducible():
    r = subprocess.run([sys.executable, str(VECTORS / "make_vectors.py"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_there_is_a_valid_vector_per_type_and_many_invalid():
    assert {p.stem for p in VALID} == {"job_manifest", "receipt", "node_record",
                                       "boot_manifest"}
    assert len(INVALID) >= 25


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_valid_vector_verifies(run_tool, path):
    r = run_tool(cli, ["--keys", str(VECTORS / "keyring.toml"), str(path)])
    assert r.code == 0, r.err
    [rec] = r.records
    assert rec["type"] == "verified" and rec["doc_type"] == path.stem
    assert rec["envelope"] == json.loads(path.read_text())


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_vector_is_rejected_with_its_slug(run_tool, path):
    slug = path.name.split("--")[0]
    r = run_tool(cli, ["--keys", str(VECTORS / "keyring.toml"), str(path)])
    assert r.code == EXIT.get(slug, 1)
    [err] = r.records  # one error record on stdout, for the next stage of a pipeline
    assert err["type"] == "error" and err["error"] == slug and err["exit_code"] == r.code
    assert slug in r.error_slugs
    assert "Traceback" not in r.err


def test_rollback_vectors_replay(run_tool, tmp_path):
    state = tmp_path / "state.json"
    base = ["--keys", str(VECTORS / "keyring.toml"), "--state", str(state)]
    steps = [("boot-v7", 0), ("boot-v5", 1), ("boot-v7-other", 1), ("boot-v7", 0),
             ("boot-v8", 0), ("boot-v7", 1)]
    for name, code in steps:
        before = state.read_bytes() if state.exists() else None
        r = run_tool(cli, [*base, str(VECTORS / "rollback" / f"{name}.json")])
        assert r.code == code, (name, r.err)
        if code:
            assert "rollback" in r.error_slugs
            assert [x["type"] for x in r.records] == ["error"]
            assert state.read_bytes() == before, "a rejected document moved the mark"
    assert json.loads(state.read_text())["marks"]["boot/stable/x86_64"]["version"] == 8


def test_rejected_boot_manifest_does_not_move_the_mark(run_tool, tmp_path):
    state = tmp_path / "state.json"
    base = ["--keys", str(VECTORS / "keyring.toml"), "--state", str(state)]
    assert run_tool(cli, [*base, str(VECTORS / "rollback" / "boot-v5.json")]).code == 0
    r = run_tool(cli, [*base, str(VECTORS / "invalid" / "threshold--boot-one-of-two.json")])
    assert r.code == 1
    r = run_tool(cli, [*base, "--now", "2100-06-01T00:00:00Z",
                       str(VECTORS / "rollback" / "boot-v8.json")])
    assert r.code == 1 and "expired" in r.error_slugs
    assert json.loads(state.read_text())["marks"]["boot/stable/x86_64"]["version"] == 5


def test_expiry_with_now(run_tool):
    doc = str(VECTORS / "valid" / "job_manifest.json")
    keys = ["--keys", str(VECTORS / "keyring.toml")]
    assert run_tool(cli, [*keys, "--now", "2099-12-30T23:59:59Z", doc]).code == 0
    r = run_tool(cli, [*keys, "--now", "2099-12-31T00:00:00Z", doc])
    assert r.code == 1 and "expired" in r.error_slugs
    r = run_tool(cli, [*keys, "--now", "1999-12-31T00:00:00Z", doc])
    assert r.code == 1 and "not_yet_valid" in r.error_slugs


def test_threshold_flag_raises_requirement(run_tool):
    r = run_tool(cli, ["--keys", str(VECTORS / "keyring.toml"), "--threshold", "3",
                       str(VECTORS / "valid" / "boot_manifest.json")])
    assert r.code == 1 and "threshold" in r.error_slugs


def test_domain_separation_receipt_as_job_manifest(run_tool):
    r = run_tool(cli, ["--keys", str(VECTORS / "keyring.toml"), str(
        VECTORS / "invalid" / "bad_signature--receipt-retyped-as-job-manifest.json")])
    assert r.code == 1 and "bad_signature" in r.error_slugs


def test_console_script_smoke():
    r = subprocess.run([script("phase-verify"), "--keys", str(VECTORS / "keyring.toml"),
                        str(VECTORS / "valid" / "receipt.json")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["doc_type"] == "receipt"
