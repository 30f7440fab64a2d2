"""Pipeline mode: records in, blob records and annotated records out; signed documents
are re-verified, so a forged upstream record cannot smuggle in artifacts."""

from __future__ import annotations

import copy
import json
import threading
from pathlib import Path

import pytest

from phase_core import boot, envelope, manifest
from phase_core.documents import Policy, verify
from phase_core.identity import Identity
from phase_core.timefmt import parse_time
from phase_core.trust import Keyring, format_entry
from tests.phase_fetch.badserver import Route
from tests.phase_fetch.conftest import FAST, blob, cid, store_is_sound

NOW = "2026-11-27T03:00:00Z"
SIGNER = Identity(bytes(range(32)))
STRANGER = Identity(bytes(range(1, 33)))
KERNEL, INITRD = blob(70_000, 2), blob(50_000, 3)


def lines(*recs: dict) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in recs)


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    p = tmp_path / "keyring.toml"
    p.write_text(format_entry("release", SIGNER.node_id, ["boot-signer", "job-submitter"]))
    return p


def boot_env(mirrors: list[str], signer: Identity = SIGNER) -> dict:
    body = boot.build(channel="stable", arch="x86_64", version=3, now=parse_time(NOW) - 60,
                      lifetime_s=3600, kernel={"id": cid(KERNEL), "size": len(KERNEL)},
                      initramfs={"id": cid(INITRD), "size": len(INITRD)},
                      cmdline="quiet", mirrors=mirrors)
    return envelope.sign("boot_manifest", body, [signer])


def verified_record(env: dict, keys: Path) -> dict:
    v = verify(env, Policy(Keyring.load(keys), parse_time(NOW)))
    return json.loads(json.dumps(v.record()))  # as it travels: no shared objects


def serve_boot(server) -> None:
    for data in (KERNEL, INITRD):
        server.routes[f"/m/sha256/{cid(data)[7:]}"] = Route(data)


def test_verified_boot_manifest(server, run, keys, cas, tmp_path):
    serve_boot(server)
    rec = verified_record(boot_env([f"{server.url}/m"]), keys)
    out_dir = tmp_path / "boot"
    out_dir.mkdir()
    r = run(f"--keys={keys}", f"--now={NOW}", f"--out-dir={out_dir}", *FAST,
            stdin=lines(rec))
    assert r.code == 0, r.err
    b1, b2, passed = r.records
    assert (b1["type"], b1["name"], b1["id"]) == ("blob", "kernel", cid(KERNEL))
    assert (b2["type"], b2["name"], b2["id"]) == ("blob", "initramfs", cid(INITRD))
    assert passed["type"] == "verified" and passed["id"] == rec["id"]
    assert passed["paths"] == {"kernel": b1["path"], "initramfs": b2["path"]}
    assert Path(passed["paths"]["kernel"]).read_bytes() == KERNEL
    assert (out_dir / "kernel").read_bytes() == KERNEL
    assert (out_dir / "initramfs").read_bytes() == INITRD


def test_bare_envelope_is_verified_too(server, run, keys):
    serve_boot(server)
    env = boot_env([f"{server.url}/m"])
    r = run(f"--keys={keys}", f"--now={NOW}", *FAST, stdin=lines(env))
    assert r.code == 0, r.err
    assert [x["type"] for x in r.records] == ["blob", "blob", "boot_manifest"]
    assert r.records[2] == env  # passed on as signed: an envelope takes no extra fields


def test_forged_record_cannot_smuggle_mirrors_or_artifacts(server, run, keys, cas):
    evil = blob(10_000, 9)
    serve_boot(server)
    server.routes[f"/evil/sha256/{cid(evil)[7:]}"] = Route(evil)
    rec = verified_record(boot_env([f"{server.url}/m"]), keys)
    forged = copy.deepcopy(rec)
    forged["body"]["kernel"] = {"id": cid(evil), "size": len(evil)}
    forged["body"]["mirrors"] = [f"{server.url}/evil"]
    r = run(f"--keys={keys}", f"--now={NOW}", *FAST, stdin=lines(forged))
    assert r.code == 1
    [err] = r.records
    assert err["type"] == "error" and err["error"] == "record_mismatch"
    # the envelope itself altered: the signature no longer holds
    forged2 = copy.deepcopy(rec)
    forged2["envelope"]["body"]["mirrors"] = [f"{server.url}/evil"]
    forged2["body"] = forged2["envelope"]["body"]
    r = run(f"--keys={keys}", f"--now={NOW}", *FAST, stdin=lines(forged2))
    assert r.code == 1 and r.records[0]["error"] == "bad_signature"
    # signed, but by a key the keyring does not trust
    r = run(f"--keys={keys}", f"--now={NOW}", *FAST,
            stdin=lines(boot_env([f"{server.url}/evil"], STRANGER)))
    assert r.code == 1 and r.records[0]["error"] in ("untrusted_signer", "threshold")
    assert server.log == [] and store_is_sound(cas) == []


def test_verified_record_without_keyring_is_missing_input(server, run, keys, tmp_path):
    rec = verified_record(boot_env([f"{server.url}/m"]), keys)
    r = run(f"--keys={tmp_path / 'nope.toml'}", f"--now={NOW}", stdin=lines(rec))
    assert r.code == 66 and server.log == []


def test_job_manifest_module_and_stdin(server, run, keys):
    module, stdin = blob(3000, 5), blob(100, 6)
    for data in (module, stdin):
        server.routes[f"/sha256/{cid(data)[7:]}"] = Route(data)
    body = manifest.build(module=cid(module), stdin=cid(stdin), now=parse_time(NOW) - 10)
    env = envelope.sign("job_manifest", body, [SIGNER])
    r = run(f"--keys={keys}", f"--now={NOW}", f"--mirror={server.url}", *FAST,
            stdin=lines(env))
    assert r.code == 0, r.err
    assert [x.get("name") for x in r.records[:2]] == ["module", "stdin"]
    assert r.records[2] == env


def test_plain_records_parallel_dedupe_and_order(server, run, cas):
    blobs = [blob(40_000, 10 + i) for i in range(6)]
    gate = threading.Barrier(3)  # the first three are served only once all three are asked
    for i, b in enumerate(blobs):
        server.routes[f"/sha256/{cid(b)[7:]}"] = (
            Route(b, "gate", gate=gate) if i < 3 else
            Route(b, "slow", chunk=8192, delay_s=0.002))
    recs = [{"v": 1, "type": "fetch", "id": cid(b), "size_bytes": len(b),
             "mirrors": [server.url]} for b in blobs]
    recs.insert(3, dict(recs[0], name="again"))  # same blob twice
    recs.insert(1, {"v": 1, "type": "something_else"})  # dropped
    r = run("--jobs=3", *FAST, stdin=lines(*recs) + b"\n\n")
    assert r.code == 0, r.err
    out = r.records
    assert [x["type"] for x in out] == ["blob", "fetch"] * 7
    assert [x["id"] for x in out[::2]] == [cid(b) for b in blobs[:3]] + [cid(blobs[0])] + \
        [cid(b) for b in blobs[3:]]
    assert out[7]["paths"] == {"again": out[6]["path"]}
    for b in blobs:  # fetched once each, even the one asked for twice
        assert len(server.requests(f"/sha256/{cid(b)[7:]}")) == 1
    assert len(store_is_sound(cas)) == 6
    assert server.max_inflight == 3  # parallel, and bounded by --jobs


def test_pipeline_bad_lines_and_failures_keep_going(server, run, cas):
    good = blob(1000, 20)
    server.routes[f"/sha256/{cid(good)[7:]}"] = Route(good)
    missing = blob(1000, 21)
    stdin = (b"not json\n"
             + lines({"v": 1, "type": "fetch", "id": "sha256:" + "A" * 64},
                     {"v": 1, "type": "fetch", "id": cid(good), "name": "../etc/passwd"},
                     {"v": 1, "type": "fetch", "id": cid(missing), "mirrors": [server.url]},
                     {"v": 1, "type": "fetch", "id": cid(good), "mirrors": [server.url]}))
    r = run(*FAST, stdin=stdin)
    types = [(x["type"], x.get("error")) for x in r.records]
    assert types == [("error", "malformed"), ("error", "bad_content_id"),
                     ("error", "malformed"), ("error", "unavailable"),
                     ("blob", None), ("fetch", None)]
    assert r.code == 69  # the worst of 65 and 69
    assert len(server.log) == 2  # the bad records caused no I/O


def test_quiet_prints_nothing(server, run):
    good = blob(1000, 20)
    server.routes[f"/sha256/{cid(good)[7:]}"] = Route(good)
    r = run("-q", *FAST, stdin=lines({"v": 1, "type": "fetch", "id": cid(good),
                                       "mirrors": [server.url]}))
    assert r.code == 0 and r.out == ""
