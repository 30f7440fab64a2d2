"""Generate the checked-in test vectors (deterministic: run it twice, get the same bytes).

    python tests/vectors/make_vectors.py            # rewrite tests/vectors/
    python tests/vectors/make_vectors.py --check    # exit 1 if the files differ

Keys are derived from fixed seeds (sha256 of "phase-vector-key:<name>"), so the
signatures (Ed25519 is deterministic) and every file are reproducible. Valid
documents are valid from 2000-01-01 to 2099-12-31.

Files:
  keyring.toml                         trusts submitter, worker, boot-1, boot-2;
                                       boot manifests need 2 boot signers
  keys/<name>.pub                      public keys (hex), for other implementations
  valid/<type>.json                    one valid document of each type
  invalid/<slug>--<what>.json          phase-verify must report <slug>
  rollback/boot-v{5,7,7-other}.json    see rollback/README.md
"""

from __future__ import annotations

import copy
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from phase_core import boot, envelope, manifest, records
from phase_core.canonical import content_id
from phase_core.identity import Identity
from phase_core.timefmt import parse_time

HERE = Path(__file__).resolve().parent
T0 = parse_time("2000-01-01T00:00:00Z")
T_END = parse_time("2099-12-31T00:00:00Z")
LIFETIME = T_END - T0
ED25519_L = 2**252 + 27742317777372353535851937790883648493  # order of the base point


def key(name: str) -> Identity:
    return Identity(hashlib.sha256(f"phase-vector-key:{name}".encode()).digest())


SUBMITTER, WORKER, BOOT1, BOOT2 = key("submitter"), key("worker"), key("boot-1"), key("boot-2")
ROGUE, NODE = key("rogue"), key("node")


def dump(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def job_body(**over: Any) -> dict[str, Any]:
    body = manifest.build(
        module=content_id(b"hello.wasm bytes"), stdin=content_id(b"Hello, World"), now=T0,
        argv=["hello.wasm"], env={"LANG": "C"}, lifetime_s=LIFETIME,
        nonce=hashlib.sha256(b"vector-nonce").hexdigest()[:32],
        requirements={"arch": "x86_64", "runtime": "wasmtime"})
    body.update(over)
    return body


def receipt_body(job_id: str, worker: Identity) -> dict[str, Any]:
    return {
        "job": job_id, "module": content_id(b"hello.wasm bytes"),
        "stdin": content_id(b"Hello, World"), "stdout": content_id(b"dlroW ,olleH"),
        "stderr": content_id(b""), "stdout_bytes": 12, "stderr_bytes": 0,
        "exit_code": 0, "ended": "exited", "trap": None, "fuel_consumed": 1240,
        "fuel_exact": True, "wall_ms": 3, "limits": dict(manifest.DEFAULT_LIMITS),
        "runtime": {"name": "wasmtime", "version": "50.0.1"}, "deterministic": False,
        "worker": worker.node_id, "completed": "2026-11-27T03:26:44Z",
    }


def boot_body(version: int, cmdline: str = "console=ttyS0 phase.mode=local",
              start: int = T0, lifetime: int = LIFETIME) -> dict[str, Any]:
    return boot.build(
        channel="stable", arch="x86_64", version=version, now=start, lifetime_s=lifetime,
        kernel={"id": content_id(b"kernel"), "size": 6},
        initramfs={"id": content_id(b"initramfs"), "size": 9}, cmdline=cmdline,
        mirrors=["http://10.0.2.2:8080/"])


def node_body() -> dict[str, Any]:
    return records.build(
        node_id=NODE.node_id, addresses=["127.0.0.1:4433"], seq=1, now=T0,
        lifetime_s=LIFETIME,
        capabilities={"arch": "x86_64", "cpu_cores": 2, "memory_bytes": 25769803776,
                      "runtimes": [{"name": "wasmtime", "version": "50.0.1"}],
                      "features": ["wasi-preview1"]})


def build() -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    kr = ["# Keyring for the test vectors (made by make_vectors.py).",
          "[thresholds]", "boot-signer = 2", ""]
    for name, ident, roles in (("submitter", SUBMITTER, ["job-submitter"]),
                               ("worker", WORKER, ["worker"]),
                               ("boot-1", BOOT1, ["boot-signer"]),
                               ("boot-2", BOOT2, ["boot-signer"])):
        role_list = ", ".join(f'"{r}"' for r in roles)
        kr += [f"[keys.{name}]", f'key = "{ident.node_id}"', f"roles = [{role_list}]", ""]
    files["keyring.toml"] = "\n".join(kr).encode()
    for name, ident in (("submitter", SUBMITTER), ("worker", WORKER), ("boot-1", BOOT1),
                        ("boot-2", BOOT2), ("rogue", ROGUE), ("node", NODE)):
        files[f"keys/{name}.pub"] = (ident.node_id + "\n").encode()

    job = envelope.sign("job_manifest", job_body(), [SUBMITTER])
    job_id = envelope.document_id("job_manifest", job["body"])
    rec = envelope.sign("receipt", receipt_body(job_id, WORKER), [WORKER])
    bm = envelope.sign("boot_manifest", boot_body(7), [BOOT1, BOOT2])
    node = envelope.sign("node_record", node_body(), [NODE])
    files["valid/job_manifest.json"] = dump(job)
    files["valid/receipt.json"] = dump(rec)
    files["valid/boot_manifest.json"] = dump(bm)
    files["valid/node_record.json"] = dump(node)

    inv: dict[str, Any] = {}
    t = copy.deepcopy(job)
    t["body"]["nonce"] = ("1" if t["body"]["nonce"][0] != "1" else "2") + t["body"]["nonce"][1:]
    inv["bad_signature--flipped-body-bit"] = t
    t = copy.deepcopy(job)
    sig = bytearray(bytes.fromhex(t["signatures"][0]["sig"]))
    sig[10] ^= 0x01
    t["signatures"][0]["sig"] = sig.hex()
    inv["bad_signature--flipped-signature-bit"] = t
    t = copy.deepcopy(rec)
    t["type"] = "job_manifest"
    inv["bad_signature--receipt-retyped-as-job-manifest"] = t
    msg = envelope.signing_message("job_manifest", rec["body"])
    inv["bad_signature--receipt-signed-for-job-manifest-domain"] = {
        "v": 1, "type": "receipt", "body": rec["body"],
        "signatures": [{"key": WORKER.node_id, "sig": WORKER.sign(msg).hex()}]}
    t = copy.deepcopy(bm)
    t["body"]["kernel"]["id"] = content_id(b"evil kernel")
    inv["bad_signature--boot-kernel-swapped"] = t
    inv["untrusted_signer--unknown-key"] = envelope.sign("job_manifest", job_body(), [ROGUE])
    inv["untrusted_signer--wrong-role"] = envelope.sign("job_manifest", job_body(), [WORKER])
    inv["untrusted_signer--receipt-not-signed-by-its-worker"] = envelope.sign(
        "receipt", receipt_body(job_id, ROGUE), [WORKER])
    other = node_body()
    inv["untrusted_signer--node-record-signed-by-another-key"] = envelope.sign(
        "node_record", other, [ROGUE])
    # A forgery libsodium (so pynacl, so we) refuses but OpenSSL's Ed25519 accepts for
    # any message: a small-order public key (the identity point) with R = identity and
    # S = 0. A verifier that does not reject small-order keys takes it as a node record
    # "self-signed" by node 0100…00 (docs/documents.md, "Signature verification").
    small_order = bytes([1]) + bytes(31)
    forged = dict(node_body(), node_id=small_order.hex())
    inv["bad_signature--small-order-key-forgery"] = {
        "v": 1, "type": "node_record", "body": forged,
        "signatures": [{"key": small_order.hex(), "sig": (small_order + bytes(32)).hex()}]}
    # A valid signature with S replaced by S + L (the group order): the same point
    # equation holds, but S is not canonical, so it is refused.
    t = copy.deepcopy(job)
    sig = bytes.fromhex(t["signatures"][0]["sig"])
    big_s = int.from_bytes(sig[32:], "little") + ED25519_L
    t["signatures"][0]["sig"] = (sig[:32] + big_s.to_bytes(32, "little")).hex()
    inv["bad_signature--non-canonical-s"] = t
    inv["untrusted_signer--boot-signed-by-job-keys"] = envelope.sign(
        "boot_manifest", boot_body(7), [SUBMITTER, WORKER])
    inv["threshold--boot-one-of-two"] = envelope.sign("boot_manifest", boot_body(7), [BOOT1])
    inv["threshold--boot-one-trusted-one-rogue"] = envelope.sign(
        "boot_manifest", boot_body(7), [BOOT1, ROGUE])
    inv["expired--job-manifest"] = envelope.sign(
        "job_manifest", job_body(expires="2000-01-02T00:00:00Z"), [SUBMITTER])
    inv["expired--boot-manifest"] = envelope.sign(
        "boot_manifest", boot_body(7, lifetime=86400), [BOOT1, BOOT2])
    inv["not_yet_valid--created-in-2200"] = envelope.sign(
        "job_manifest", job_body(created="2200-01-01T00:00:00Z",
                                 expires="2200-01-02T00:00:00Z"), [SUBMITTER])
    t = copy.deepcopy(job)
    t["type"] = "invoice"
    inv["wrong_type--unknown-document-type"] = t
    t = copy.deepcopy(job)
    bad = job_body()
    bad["limits"] = dict(bad["limits"], fuel="1000")
    inv["malformed--wrong-field-type-signed"] = envelope.sign("job_manifest", bad, [SUBMITTER])
    inv["malformed--unknown-body-field"] = envelope.sign(
        "job_manifest", job_body(priority=5), [SUBMITTER])
    t = copy.deepcopy(job)
    t["comment"] = "hello"
    inv["malformed--unknown-envelope-field"] = t
    t = copy.deepcopy(job)
    t["signatures"][0]["key"] = t["signatures"][0]["key"].upper()
    inv["malformed--uppercase-hex-key"] = t
    t = copy.deepcopy(job)
    t["signatures"][0]["key"] = t["signatures"][0]["key"][:62]
    inv["malformed--key-of-31-bytes"] = t
    t = copy.deepcopy(job)
    t["signatures"][0]["sig"] = "zz" + t["signatures"][0]["sig"][2:]
    inv["malformed--bad-hex-signature"] = t
    t = copy.deepcopy(job)
    t["signatures"] = []
    inv["malformed--no-signatures"] = t
    t = copy.deepcopy(job)
    t["signatures"] = t["signatures"] * 2
    inv["malformed--same-signer-twice"] = t
    t = copy.deepcopy(job)
    t["body"] = ["not", "an", "object"]
    inv["malformed--body-not-an-object"] = t
    t = copy.deepcopy(job)
    t["v"] = 2
    inv["malformed--envelope-version-2"] = t
    t = copy.deepcopy(job)
    t["signatures"] = [{"key": key(f"k{i}").node_id, "sig": "00" * 64} for i in range(1000)]
    inv["too_large--1000-signatures"] = t
    for name, obj in inv.items():
        files[f"invalid/{name}.json"] = dump(obj)

    # raw-text vectors the JSON encoder could never produce
    text = dump(job).decode()
    files["invalid/malformed--truncated-json.json"] = text[: len(text) // 2].encode()
    files["invalid/malformed--duplicate-key.json"] = text.replace(
        '"argv": [', '"argv": [],\n    "argv": [', 1).encode()
    files["invalid/malformed--float-in-body.json"] = text.replace(
        '"fuel": 10000000000', '"fuel": 1e10', 1).encode()
    files["invalid/malformed--nan-in-body.json"] = text.replace(
        '"fuel": 10000000000', '"fuel": NaN', 1).encode()
    files["invalid/malformed--integer-out-of-range.json"] = text.replace(
        '"fuel": 10000000000', '"fuel": 90071992547409910', 1).encode()
    files["invalid/malformed--lone-surrogate.json"] = text.replace(
        '"LANG": "C"', '"LANG": "\\ud800"', 1).encode()
    files["invalid/malformed--nesting-too-deep.json"] = text.replace(
        '"LANG": "C"', '"LANG": ' + "[" * 40 + "]" * 40, 1).encode()
    files["invalid/malformed--not-utf8.json"] = text.replace(
        '"LANG": "C"', '"LANG": "\xff"', 1).encode("latin-1")
    files["invalid/too_large--over-1-mib.json"] = text.replace(
        '"LANG": "C"', '"LANG": "' + "A" * (1 << 20) + '"', 1).encode()

    # rollback: replay v7, then v5 (older) and v7-other (same version, other content)
    files["rollback/boot-v7.json"] = dump(bm)
    files["rollback/boot-v5.json"] = dump(envelope.sign("boot_manifest", boot_body(5),
                                                        [BOOT1, BOOT2]))
    files["rollback/boot-v7-other.json"] = dump(envelope.sign(
        "boot_manifest", boot_body(7, cmdline="console=ttyS0 phase.mode=internet"),
        [BOOT1, BOOT2]))
    files["rollback/boot-v8.json"] = dump(envelope.sign("boot_manifest", boot_body(8),
                                                        [BOOT1, BOOT2]))
    return files


def main(argv: list[str]) -> int:
    files = build()
    if "--check" in argv:
        bad = [n for n, data in files.items() if (HERE / n).read_bytes() != data]
        for n in bad:
            print(f"differs: {n}", file=sys.stderr)
        return 1 if bad else 0
    for sub in ("valid", "invalid", "rollback", "keys"):
        d = HERE / sub
        d.mkdir(exist_ok=True)
        for old in d.glob("*"):
            if old.suffix in (".json", ".pub"):
                old.unlink()
    for name, data in files.items():
        (HERE / name).write_bytes(data)
    print(f"wrote {len(files)} files under {HERE}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
