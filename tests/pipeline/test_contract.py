"""The reader rules of docs/pipeline.md, tool by tool, in-process."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from phase_core import envelope, identity, manifest
from phase_core.cas import ContentStore
from phase_core.cli.pipeline import sources_of, upstream_exit_code
from phase_core.identity import Identity
from phase_core.trust import format_entry
from phase_fetch import cli as fetch_cli
from phase_verify import cli as verify_cli
from plasm_exec import cli as exec_cli
from tests.phase_fetch.badserver import BadServer, Route
from tests.phase_fetch.conftest import FAST, cid
from tests.pipeline.conftest import EXAMPLES

SUBMITTER = Identity(bytes([5]) * 32)
UPSTREAM = {"v": 1, "type": "error", "error": "unavailable", "message": "no source had it",
            "exit_code": 69, "name": "kernel"}
UNKNOWN = {"v": 1, "type": "weather_report", "sky": "blue"}
HELLO = (EXAMPLES / "hello.wasm").read_bytes()
STDIN = b"Hello, World"


def lines(*recs: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in recs)


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    p = tmp_path / "keyring.toml"
    p.write_text(format_entry("me", SUBMITTER.node_id, ["job-submitter"]))
    return p


@pytest.fixture
def job() -> dict[str, Any]:
    body = manifest.build(module=cid(HELLO), stdin=cid(STDIN), now=int(time.time()) - 10,
                          argv=["hello.wasm"])
    return envelope.sign(manifest.TYPE, body, [SUBMITTER])


def verified(run_tool, keys: Path, *recs: dict[str, Any]) -> dict[str, Any]:
    r = run_tool(verify_cli, ["--keys", str(keys)], stdin=lines(*recs))
    assert r.code == 0, r.err
    return r.records[-1]


# -- the shared helper ---------------------------------------------------------------

@pytest.mark.parametrize(("code", "want"), [(69, 69), (1, 1), (255, 255), (None, 1),
                                             ("69", 1), (0, 1), (256, 1), (True, 1)])
def test_upstream_exit_code(code, want):
    rec = {"v": 1, "type": "error"} if code is None else {"v": 1, "type": "error",
                                                          "exit_code": code}
    assert upstream_exit_code(rec) == want


def test_sources_of_keeps_only_http_urls_once():
    rec = {"sources": ["http://a.example/m", "file:///etc/passwd", 7, "http://a.example/m",
                       "https://b.example/x y"], "provider_url": "https://c.example"}
    assert sources_of(rec) == ["http://a.example/m", "https://c.example"]
    assert sources_of({"sources": "http://a.example"}) == []


# -- phase-verify ---------------------------------------------------------------------

def test_verify_passes_upstream_errors_on_and_exits_with_their_code(run_tool, keys, job):
    r = run_tool(verify_cli, ["--keys", str(keys)], stdin=lines(UPSTREAM, job))
    assert r.code == 69
    assert r.records[0] == UPSTREAM  # unchanged
    assert r.records[1]["type"] == "verified"


def test_verify_with_only_upstream_errors_is_not_missing_input(run_tool, keys):
    bare = {"v": 1, "type": "error", "error": "x", "message": "m"}  # no exit_code: 1
    r = run_tool(verify_cli, ["--keys", str(keys)], stdin=lines(bare), check=False)
    assert r.code == 1 and r.records == [bare]


def test_verify_reads_files_and_stdin_alike(run_tool, keys, job, tmp_path):
    data = lines(UNKNOWN, job, UNKNOWN)
    f = tmp_path / "in.jsonl"
    f.write_bytes(data)
    a = run_tool(verify_cli, ["--keys", str(keys)], stdin=data)
    b = run_tool(verify_cli, ["--keys", str(keys), str(f)])
    assert a.code == b.code == 0
    assert [x["id"] for x in a.records] == [x["id"] for x in b.records] == [
        envelope.document_id(manifest.TYPE, job["body"])]
    only = tmp_path / "unknown.json"
    only.write_text(json.dumps(UNKNOWN))  # one object that is no document: dropped
    for r in (run_tool(verify_cli, ["--keys", str(keys), str(only)]),
              run_tool(verify_cli, ["--keys", str(keys)], stdin=lines(UNKNOWN))):
        assert r.code == 66 and r.out == ""
        assert "missing_input" in r.error_slugs


def test_verify_reads_its_own_and_phase_fetchs_output(run_tool, keys, job):
    first = verified(run_tool, keys, job)
    again = verified(run_tool, keys, first, {**first, "paths": {"module": "/x"}})
    assert again["id"] == first["id"] and again["envelope"] == job


def test_verify_carries_source_hints(run_tool, keys, job):
    carrier = {"v": 1, "type": "offer", "provider_url": "http://127.0.0.1:9/p",
               "sources": ["https://m.example/a", "ftp://no"], "envelope": job}
    rec = verified(run_tool, keys, carrier)
    assert rec["sources"] == ["https://m.example/a", "http://127.0.0.1:9/p"]
    assert "sources" not in verified(run_tool, keys, job)  # a bare envelope has none


# -- phase-fetch ----------------------------------------------------------------------

@pytest.fixture
def server():
    with BadServer() as s:
        yield s


def test_fetch_keeps_upstream_errors_in_order(run_tool, phase_home, server):
    server.routes[f"/sha256/{cid(STDIN)[7:]}"] = Route(STDIN)
    req = {"v": 1, "type": "fetch", "id": cid(STDIN), "mirrors": [server.url]}
    r = run_tool(fetch_cli, [*FAST], stdin=lines(req, UNKNOWN, UPSTREAM, req))
    assert r.code == 69
    assert [x["type"] for x in r.records] == ["blob", "fetch", "error", "blob", "fetch"]
    assert r.records[2] == UPSTREAM


@pytest.mark.parametrize("data", [b"", b"\n\n", lines(UNKNOWN)])
def test_fetch_with_nothing_to_fetch_is_missing_input(run_tool, phase_home, data):
    r = run_tool(fetch_cli, [], stdin=data)
    assert r.code == 66 and r.out == ""
    assert "missing_input" in r.error_slugs


def test_fetch_tries_flags_then_sources_then_signed_mirrors(run_tool, phase_home, keys,
                                                            server, job, tmp_path):
    for p in ("/flag", "/hint", "/signed"):
        server.routes[f"{p}/sha256/{cid(STDIN)[7:]}"] = Route(b"", "status", status=404)
    server.routes[f"/hint/sha256/{cid(HELLO)[7:]}"] = Route(HELLO)
    server.routes[f"/hint/sha256/{cid(STDIN)[7:]}"] = Route(STDIN)
    rec = verified(run_tool, keys, {"v": 1, "type": "x", "envelope": job,
                                    "sources": [f"{server.url}/hint"]})
    out = tmp_path / "a" / "b"  # created, parents too
    r = run_tool(fetch_cli, [f"--keys={keys}", f"--mirror={server.url}/flag", *FAST,
                             f"--out-dir={out}"], stdin=lines(rec))
    assert r.code == 0, r.err
    assert [x["type"] for x in r.records] == ["blob", "blob", "verified"]
    asked = [q.path.split("/sha256/")[0] for q in server.log]
    assert asked.count("/flag") == 2 and asked.count("/hint") == 2 and "/signed" not in asked
    assert asked.index("/flag") < asked.index("/hint")
    assert (out / "module").read_bytes() == HELLO and (out / "stdin").read_bytes() == STDIN


def test_fetch_out_dir_that_is_a_file_is_bad_input(run_tool, phase_home, tmp_path):
    f = tmp_path / "file"
    f.write_text("")
    r = run_tool(fetch_cli, [f"--out-dir={f}"], stdin=lines(UNKNOWN))
    assert r.code == 65 and "not a directory" in r.err


# -- plasm-exec job -------------------------------------------------------------------

def test_job_runs_verified_records_and_drops_blob_records(run_tool, phase_home, keys, job):
    cas = ContentStore(phase_home / "cas")
    cas.put_bytes(HELLO)
    cas.put_bytes(STDIN)
    rec = verified(run_tool, keys, job)
    blob = {"v": 1, "type": "blob", "id": cid(HELLO), "size_bytes": len(HELLO),
            "path": "/x", "source": "cas", "name": "module"}
    r = run_tool(exec_cli, ["job", "--keys", str(keys)],
                 stdin=lines(blob, UPSTREAM, rec, UNKNOWN), tool="plasm-exec")
    assert r.code == 69, r.err
    assert [x["type"] for x in r.records] == ["error", "job_result"]
    assert r.records[0] == UPSTREAM
    res = r.records[1]
    assert res["envelope"]["type"] == "receipt" and res["exit_code"] == 0
    assert res["job"] == rec["id"]
    # the receipt verifies as it comes: phase-verify reads job_result's envelope
    worker = identity.load(phase_home / "key").node_id
    with open(keys, "a") as f:
        f.write(format_entry("worker", worker, ["worker"]))
    [v] = run_tool(verify_cli, ["--keys", str(keys)], stdin=lines(res)).records
    assert v["type"] == "verified" and v["doc_type"] == "receipt" and v["signers"] == ["worker"]


def test_job_with_only_blob_records_is_missing_input(run_tool, phase_home):
    blob = {"v": 1, "type": "blob", "id": cid(HELLO), "size_bytes": 1, "path": "/x",
            "source": "cas"}
    r = run_tool(exec_cli, ["job"], stdin=lines(blob), tool="plasm-exec")
    assert r.code == 66 and r.out == ""


def test_job_reads_a_file_like_stdin(run_tool, phase_home, tmp_path):
    r = run_tool(exec_cli, ["job", str(tmp_path / "nope.jsonl")], tool="plasm-exec")
    assert r.code == 66 and "no such file" in r.err
    f = tmp_path / "jobs.jsonl"
    f.write_bytes(lines(UPSTREAM))
    r = run_tool(exec_cli, ["job", str(f)], tool="plasm-exec")
    assert r.code == 69 and r.records == [UPSTREAM]
