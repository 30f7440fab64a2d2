"""The READMEs' pipelines, run verbatim with `sh -c`, and the same pipelines failing."""

from __future__ import annotations

import pytest

from tests.pipeline import readme
from tests.pipeline.conftest import World, main_pipeline

RUN = readme.of_kind("run")


def test_every_documented_pipeline_is_marked():
    unmarked = [b.name for b in readme.all_blocks() if b.is_pipeline and b.kind is None]
    assert unmarked == [], "mark these README blocks with <!-- pipeline-test: ... -->"
    assert RUN and readme.of_kind("setup") and readme.of_kind("boot")


@pytest.mark.parametrize("block", RUN, ids=lambda b: b.name)
def test_readme_pipeline_runs(world: World, block: readme.Block):
    r = world.sh(block.code)
    assert r.code == 0, r.err
    last = r.records[-1]
    for key, want in block.expect.items():
        assert str(last.get(key)) == want, (key, last)


def test_main_pipeline_output(world: World):
    r = world.sh(main_pipeline().code)
    assert r.code == 0, r.err
    [rec] = r.records
    assert rec["doc_type"] == "receipt" and rec["signers"] == ["worker"]
    assert rec["body"]["ended"] == "exited" and rec["body"]["exit_code"] == 0
    assert rec["body"]["stdout_bytes"] == len("dlroW ,olleH")


def test_tampered_manifest_fails_the_pipeline(world: World):
    job = world.dir / "job.json"
    job.write_text(job.read_text().replace('"hello.wasm"', '"evil.wasm"'))
    r = world.sh(main_pipeline().code)
    assert r.code == 1, r.err
    [err] = r.records  # the first stage's rejection, passed on by every later stage
    assert err["type"] == "error" and err["error"] == "bad_signature"


def test_wrong_blob_fails_the_pipeline(world: World):
    world.blob_path("in.txt").write_bytes(b"Hello, Mallory")
    r = world.sh(main_pipeline().code)
    assert r.code == 1, r.err
    assert r.types == ["error"] and r.records[0]["error"] == "digest_mismatch"
    assert r.records[0]["name"] == "stdin"


def test_trapped_guest_fails_the_pipeline(world: World):
    r = world.sh("phase-key manifest --module=trap.wasm | phase-key sign --key=me.key"
                 " > job.json && cp trap.wasm blobs/$(sha256sum trap.wasm | cut -c1-64)")
    assert r.code == 0, r.err
    r = world.sh(main_pipeline().code)
    assert r.code == 1, r.err
    # the receipt of a failed job still verifies; the job_failed error travels after it
    assert r.types == ["verified", "error"]
    assert r.records[0]["body"]["ended"] == "trapped"
    assert r.records[1]["error"] == "job_failed" and r.records[1]["exit_code"] == 1


def test_empty_input_is_missing_input(world: World):
    for tool in ("phase-verify --keys keyring.toml", "phase-fetch --keys keyring.toml",
                 "plasm-exec job --keys keyring.toml"):
        r = world.sh(f": | {tool}")
        assert r.code == 66 and r.out == "", (tool, r.err)
        assert '"missing_input"' in r.err
