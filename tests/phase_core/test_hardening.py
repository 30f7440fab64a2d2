"""Regression tests for input and filesystem hardening in phase-core's pure parts."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from phase_core import crypto, documents, envelope, fsutil, manifest, records
from phase_core.canonical import content_id
from phase_core.cas import ContentStore
from phase_core.errors import BadSignature, IOFailure, Malformed
from phase_core.identity import Identity
from phase_core.protocol.dht import split_address
from phase_core.state import StateStore
from phase_core.timefmt import parse_time
from phase_core.trust import Keyring
from phase_verify import cli
from tests.conftest import VECTORS

KEYS = ["--keys", str(VECTORS / "keyring.toml")]
NODE = Identity(hashlib.sha256(b"hardening-node").digest())
SUBMITTER = Identity(hashlib.sha256(b"hardening-submitter").digest())
NOW = parse_time("2030-01-01T00:00:00Z")


def _vector(name: str) -> dict:
    return json.loads((VECTORS / name).read_text())


# -- a node record's body is checked before its node_id is used -----------------
@pytest.mark.parametrize("node_id", [[NODE.node_id], {"k": NODE.node_id}, 7, None])
def test_node_record_with_non_string_node_id_is_malformed_and_keep_going_goes_on(
        run_tool, node_id):
    body = dict(_vector("valid/node_record.json")["body"], node_id=node_id)
    bad = envelope.sign("node_record", body, [NODE])
    data = (json.dumps(bad) + "\n" + json.dumps(_vector("valid/job_manifest.json")) + "\n")
    r = run_tool(cli, [*KEYS, "--keep-going"], stdin=data.encode())
    assert [x["type"] for x in r.records] == ["error", "verified"], r.err
    assert r.records[0]["error"] == "malformed"
    assert r.records[1]["doc_type"] == "job_manifest"
    assert r.code == 65
    assert "Traceback" not in r.err


# -- times: ASCII digits only -----------------------------------------------------
@pytest.mark.parametrize("text", ["２０４９-01-01T00:00:00Z", "2049-01-01T00:00:0٠Z",
                                  "2049-०1-01T00:00:00Z"])
def test_time_with_non_ascii_digits_is_refused(text):
    assert int("２０４９") == 2049  # what \d plus int() would have accepted
    with pytest.raises(Malformed):
        parse_time(text)


def test_manifest_expiring_in_fullwidth_digits_does_not_verify():
    body = manifest.build(module=content_id(b"m"), stdin=None, now=NOW)
    body["expires"] = "２０４９-01-01T00:00:00Z"
    env = envelope.sign("job_manifest", body, [SUBMITTER])
    kr = Keyring().with_key("s", SUBMITTER.node_id, ["job-submitter"])
    with pytest.raises(Malformed, match="not of the form"):
        documents.verify(env, documents.Policy(keyring=kr, now=NOW))


# -- NUL in argv and env values -----------------------------------------------------
@pytest.mark.parametrize("over", [{"env": {"A": "x\0B=evil"}}, {"argv": ["main.wasm", "a\0b"]}])
def test_nul_in_manifest_argv_or_env_is_refused(over):
    with pytest.raises(Malformed, match="NUL"):
        manifest.build(module=content_id(b"m"), stdin=None, now=NOW, **over)
    body = manifest.build(module=content_id(b"m"), stdin=None, now=NOW)
    body.update(over)
    env = envelope.sign("job_manifest", body, [SUBMITTER])
    kr = Keyring().with_key("s", SUBMITTER.node_id, ["job-submitter"])
    with pytest.raises(Malformed, match="NUL"):
        documents.verify(env, documents.Policy(keyring=kr, now=NOW))


# -- node-record addresses: one format, the dialer's -------------------------------
def test_vector_addresses_are_what_the_dialer_reads():
    for name in ("valid/node_record.json",
                 "invalid/untrusted_signer--node-record-signed-by-another-key.json"):
        for addr in _vector(name)["body"]["addresses"]:
            host, port = split_address(addr)
            assert addr in (f"{host}:{port}", f"[{host}]:{port}")


@pytest.mark.parametrize("addr", ["127.0.0.1:4433", "[::1]:4433", "node-1.example:9",
                                  "[2001:db8::1]:65535"])
def test_good_addresses(addr):
    assert records.address(addr, "a") == addr
    split_address(addr)


@pytest.mark.parametrize("addr", [
    "quic://127.0.0.1:4433", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:04433",
    "::1:4433", "[::1%eth0]:1", "[zz::1]:1", "300.1.1.1:1", "1.2.3:4", "-host:1",
    "a..b:1", "host :1", "hôst:1", "h:１２", "x" * 70 + ":1", "", 7])
def test_bad_addresses_are_refused(addr):
    with pytest.raises(Malformed):
        records.address(addr, "a")
    body = dict(_vector("valid/node_record.json")["body"], addresses=[addr])
    with pytest.raises(Malformed):
        records.BODY(body, "node_record")


# -- Ed25519: libsodium's rule (small-order keys and R, non-canonical S refused) ----
SMALL_ORDER = bytes([1]) + bytes(31)  # the identity point


def test_small_order_forgery_is_refused_though_openssl_accepts_it():
    sig = SMALL_ORDER + bytes(32)  # R = identity, S = 0: "valid" for every message
    msg = b"phase:node_record:v1\nanything"
    ed = pytest.importorskip("cryptography.hazmat.primitives.asymmetric.ed25519")
    ed.Ed25519PublicKey.from_public_bytes(SMALL_ORDER).verify(sig, msg)  # OpenSSL: accepted
    with pytest.raises(BadSignature):
        crypto.verify(SMALL_ORDER, msg, sig)


def test_small_order_forgery_vector_is_bad_signature():
    doc = _vector("invalid/bad_signature--small-order-key-forgery.json")
    assert doc["body"]["node_id"] == SMALL_ORDER.hex()
    with pytest.raises(BadSignature):
        documents.verify(doc, documents.Policy(keyring=Keyring(), now=NOW))


def test_small_order_r_and_non_canonical_s_and_key_are_refused():
    msg = b"m"
    sig = NODE.sign(msg)
    pub = bytes.fromhex(NODE.node_id)
    crypto.verify(pub, msg, sig)
    order = 2**252 + 27742317777372353535851937790883648493
    big_s = (int.from_bytes(sig[32:], "little") + order).to_bytes(32, "little")
    with pytest.raises(BadSignature):
        crypto.verify(pub, msg, sig[:32] + big_s)
    with pytest.raises(BadSignature):
        crypto.verify(pub, msg, SMALL_ORDER + sig[32:])
    p = 2**255 - 19  # y = p is a non-canonical encoding of y = 0
    with pytest.raises(BadSignature):
        crypto.verify(p.to_bytes(32, "little"), msg, sig)


# -- files: never through a planted symbolic link -----------------------------------
def test_partial_symlink_is_not_followed(tmp_path):
    from phase_fetch.sink import PartialWriter, partial_path

    store = ContentStore(tmp_path / "cas")
    data = b"the blob"
    cid = content_id(data)
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    link = partial_path(store, cid)
    link.parent.mkdir(exist_ok=True)
    link.symlink_to(victim)
    with pytest.raises(IOFailure, match="symbolic link"):
        PartialWriter(store, cid, len(data), 1 << 20)
    assert victim.read_bytes() == b"precious"
    assert link.is_symlink() and not store.has(cid)


def test_lock_file_symlink_is_not_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    (tmp_path / "x.lock").symlink_to(victim)
    with pytest.raises(IOFailure, match="symbolic link"), fsutil.locked(tmp_path / "x.lock"):
        pass
    (tmp_path / "dangling.lock").symlink_to(tmp_path / "nowhere")
    with pytest.raises(IOFailure), fsutil.locked(tmp_path / "dangling.lock"):
        pass
    assert not (tmp_path / "nowhere").exists()


def test_job_journal_symlink_is_not_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious\n")
    (tmp_path / "state.json.jobs").symlink_to(victim)
    store = StateStore(tmp_path / "state.json")
    with pytest.raises(IOFailure, match="symbolic link"):
        store.record_job(SUBMITTER.node_id, content_id(b"j"), NOW + 60, NOW)
    assert victim.read_bytes() == b"precious\n"


# -- new directories are fsync'd into their parents ------------------------------------
@pytest.fixture
def synced(monkeypatch):
    seen: list[Path] = []
    real = fsutil.fsync_dir

    def spy(path):
        seen.append(Path(path))
        real(path)
    from phase_core import cas, state
    for module in (fsutil, cas, state):
        monkeypatch.setattr(module, "fsync_dir", spy)
    return seen


def test_make_dirs_fsyncs_each_new_directory_into_its_parent(tmp_path, synced):
    fsutil.make_dirs(tmp_path / "a" / "b" / "c")
    assert synced == [tmp_path, tmp_path / "a", tmp_path / "a" / "b"]
    synced.clear()
    fsutil.make_dirs(tmp_path / "a" / "b")  # exists: nothing to do
    assert synced == []
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(IOFailure):
        fsutil.make_dirs(tmp_path / "file" / "sub")


def test_store_commit_fsyncs_a_new_fan_out_directory(tmp_path, synced):
    store = ContentStore(tmp_path / "cas")
    assert tmp_path / "cas" in synced  # sha256/, tmp/, quarantine/ made durable
    synced.clear()
    cid = store.put_bytes(b"first blob")
    fan_out = store.path_for(cid).parent
    assert synced.index(fan_out.parent) < synced.index(fan_out)  # the dir, then the blob


def test_journal_creation_fsyncs_its_directory(tmp_path, synced):
    store = StateStore(tmp_path / "new" / "state.json")
    store.record_job(SUBMITTER.node_id, content_id(b"j"), NOW + 60, NOW)
    assert tmp_path in synced  # new/ into its parent
    assert tmp_path / "new" in synced  # the journal's name into new/


# -- a damaged state.json is a configuration error, not a traceback ---------------------
@pytest.mark.parametrize("marks", [None, [], {"boot/s/a": None}, {"boot/s/a": {}},
                                   {"boot/s/a": {"version": "7", "id": "sha256:a"}},
                                   {"boot/s/a": {"version": 7, "id": 7}}])
def test_damaged_state_marks_are_config_errors(tmp_path, marks):
    from phase_core.errors import ConfigError

    path = tmp_path / "state.json"
    path.write_text(json.dumps({"v": 1, "type": "phase_state", "marks": marks}))
    with pytest.raises(ConfigError, match="damaged"):
        StateStore(path).marks()
    with pytest.raises(ConfigError, match="damaged"):
        StateStore(path).commit_mark("boot/s/a", 8, "sha256:b")


def test_keyring_thresholds_must_be_a_table():
    from phase_core.errors import ConfigError

    with pytest.raises(ConfigError, match="thresholds"):
        Keyring.parse(b"thresholds = 3\n")
