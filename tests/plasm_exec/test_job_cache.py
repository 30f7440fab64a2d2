"""`plasm-exec job` records, and the compiled-module cache."""

from __future__ import annotations

import base64
import io
import json
import sys

import pytest

from phase_core import envelope, manifest
from phase_core.canonical import content_id
from phase_core.cas import ContentStore
from phase_core.identity import Identity
from phase_core.trust import format_entry
from plasm_exec.cli import cli
from tests.records import check_stdout

NOW = 1_800_000_000


def signed_manifest(submitter, mod_id, stdin_id, **kw):
    body = manifest.build(module=mod_id, stdin=stdin_id, now=NOW, **kw)
    return envelope.sign(manifest.TYPE, body, [submitter])


def run_job(monkeypatch, capsys, lines, *args):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(
        "".join(json.dumps(x) + "\n" for x in lines).encode())))
    rc = cli(["job", "--now", "2027-01-15T08:00:00Z", *args])
    text = capsys.readouterr().out
    check_stdout(text, "plasm-exec job")
    out = [json.loads(x) for x in text.splitlines()]
    return rc, out


def test_job_records(tmp_path, phase_home, wasm, monkeypatch, capsys):
    cas = ContentStore(phase_home / "cas")
    mod = cas.put_bytes(wasm["cat"])
    sub = Identity.generate()
    good = signed_manifest(sub, mod, cas.put_bytes(b"job input"))
    p = tmp_path / "m.wasm"
    p.write_bytes(wasm["flood"])
    flood = signed_manifest(sub, content_id(wasm["flood"]), None,
                            limits={"memory_bytes": 1 << 20, "fuel": 10**9, "wall_ms": 5000,
                                    "output_bytes": 100})
    tampered = json.loads(json.dumps(good))
    tampered["body"]["argv"] = ["evil"]
    rc, out = run_job(monkeypatch, capsys, [
        good, {"v": 1, "type": "job", "manifest": flood, "module_path": str(p)},
        tampered, {"v": 1, "type": "unknown_kind"}])
    assert rc == 1
    assert [r["type"] for r in out] == ["job_result", "job_result", "error", "error"]
    assert base64.b64decode(out[0]["stdout_b64"]) == b"job input"
    assert out[0]["envelope"]["body"]["job"] == envelope.document_id("job_manifest", good["body"])
    assert cas.read(out[0]["stdout_id"]) == b"job input"
    assert out[1]["ended"] == "output_limit" and out[1]["stdout_bytes"] == 100
    # a job that ran but failed is followed by an error record, for the pipeline's status
    assert out[2]["error"] == "job_failed" and out[2]["exit_code"] == 1
    assert out[2]["job"] == out[1]["job"]
    assert out[3]["error"] == "bad_signature"


def test_job_needs_trusted_submitter(tmp_path, phase_home, wasm, monkeypatch, capsys):
    cas = ContentStore(phase_home / "cas")
    sub, other = Identity.generate(), Identity.generate()
    mod = cas.put_bytes(wasm["cat"])
    kr = tmp_path / "keys.toml"
    kr.write_text(format_entry("alice", sub.node_id, ["job-submitter"]))
    rc, out = run_job(monkeypatch, capsys, [signed_manifest(sub, mod, None),
                                            signed_manifest(other, mod, None)],
                      "--keys", str(kr))
    assert rc == 1
    assert out[0]["type"] == "job_result" and out[0]["exit_code"] == 0
    assert out[1]["error"] == "untrusted_signer"


def test_job_limits_are_clamped(phase_home, wasm, monkeypatch, capsys):
    cas = ContentStore(phase_home / "cas")
    m = signed_manifest(Identity.generate(), cas.put_bytes(wasm["spin"]), None)
    rc, out = run_job(monkeypatch, capsys, [m], "--fuel", "5000")
    assert rc == 1
    assert out[0]["ended"] == "out_of_fuel"
    assert out[0]["envelope"]["body"]["limits"]["fuel"] == 5000
    assert out[1]["error"] == "job_failed"


def test_cache_hit_corrupt_and_evict(tmp_path, wasm):
    from plasm_exec.api import Executor
    from plasm_exec.cache import ModuleCache

    home = tmp_path / "h"
    ex = Executor(home)
    ex.load(wasm["cat"])
    cache: ModuleCache = ex.cache
    mid = content_id(wasm["cat"])
    entry = cache.path_for(mid)
    assert entry.exists() and cache.load(mid) is not None
    # a corrupt entry is dropped and rebuilt by the next process-level load
    data = bytearray(entry.read_bytes())
    data[-10] ^= 0xFF
    entry.write_bytes(bytes(data))
    ex2 = Executor(home)
    prog = ex2.load(wasm["cat"])
    assert ex2.run(prog, __import__("plasm_exec.api").api.RunSpec(), stdin=b"ok").stdout == b"ok"
    assert cache.load(mid) is not None  # rewritten intact
    # a foreign artifact with a valid checksum is ignored too
    cache.save(mid, b"not an artifact")
    assert Executor(home).load(wasm["cat"]) is not None
    # LRU: a tiny cap keeps only the newest entry
    small = ModuleCache(tmp_path / "c", fingerprint="x", max_bytes=300)
    small.save("sha256:" + "1" * 64, b"a" * 200)
    small.save("sha256:" + "2" * 64, b"b" * 200)
    assert small.load("sha256:" + "1" * 64) is None
    assert small.load("sha256:" + "2" * 64) == b"b" * 200


@pytest.mark.parametrize("home_arg", [False])
def test_compiled_once_per_executor(executor, wasm, home_arg):
    assert executor.load(wasm["cat"]) is executor.load(wasm["cat"])
