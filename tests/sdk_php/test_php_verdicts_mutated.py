"""The PHP verifier and phase-verify agree on re-signed mutations of the vectors.

Each valid vector's body is changed in one place (a field replaced by a value from a
pool of edge cases, removed, or an unknown field added), then signed again with the
vector keys (tests/vectors/make_vectors.py derives them from their names), so the
signatures hold and the body schema, bindings and validity window decide. Both
verifiers must give the same verdict and exit code for every document.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

from phase_core import envelope
from phase_core.identity import Identity
from tests.conftest import VECTORS
from tests.sdk_php.test_php_sdk import _phase_verify, _php_verify, php  # noqa: F401

SIGNERS = {"job_manifest": ["submitter"], "receipt": ["worker"], "node_record": ["node"],
           "boot_manifest": ["boot-1", "boot-2"]}
NOW = "2026-11-28T00:00:00Z"

STRINGS = ["", "a", "A", "a" * 32, "a" * 33, "a" * 64, "a" * 65, "a" * 129, "é" * 33, "x" * 4097,
           "sha256:" + "0" * 64, "sha256:" + "A" * 64, "sha256:" + "0" * 63, "0" * 64, "0" * 63,
           "x86_64", "aarch64", "wasmtime", "50.0.1", "1.0+local", "v 1", "a_b", "a.b-c", "A_B",
           "127.0.0.1:1", "[::1]:65535", "[::1]:65536", "host:0", "300.1.1.1:80", "01.2.3.4:5",
           "a-.b:1", "-a.b:1", "a.b:01", "quic://h:1", "[fe80::1%eth0]:1", "[1.2.3.4]:1",
           "node.example:4433", "exited", "trapped", "timeout", "public", "private", "nope",
           "https://m.example/", "http://m.example/x", "https://x y", "ftp://m/", "https://",
           "2026-02-28T00:00:00Z", "2026-02-29T00:00:00Z", "2024-02-29T00:00:00Z",
           "2026-11-27T24:00:00Z", "2026-11-27T03:26:60Z", "2026-11-27t03:26:44z",
           "２０２６-11-27T03:26:44Z", "2026-11-27T03:26:44.5Z", "2026-11-27T03:26:44+00:00",
           "2199-01-01T00:00:00Z", "1999-01-01T00:00:00Z", "0001-01-01T00:00:00Z",
           "x\u0000y", "\u2028", "line\nbreak", "tab\t", "\x7f", "console=ttyS0", "LANG",
           "1X", "_", "a" * 256, "a" * 257, "abcdef0123456789" * 2, "ABCDEF0123456789" * 2,
           "abcdef0123456789" * 4 + "0", "é" * 100, "😀" * 40, "é" * 3000, "😀" * 1025]
INTS = [-1, 0, 1, 2, 255, 256, 4096, 4097, 65535, 65536, 65537, 2**30, 4 << 30, (4 << 30) + 1,
        2**40, 2**40 + 1, 7 * 24 * 3600 * 1000, 7 * 24 * 3600 * 1000 + 1, 2**53 - 1]
OTHER: list[Any] = [True, False, None, [], {}, ["a", "a"], ["x86_64"], ["a", "b"],
                    {"name": "wasmtime", "version": "1"}, {"id": "sha256:" + "1" * 64, "size": 1},
                    [{"name": "wasmtime", "version": "50.0.1"}], ["127.0.0.1:4433"],
                    ["0" * 64, "0" * 64], {"memory_bytes": 65536, "fuel": 1, "wall_ms": 1,
                                           "output_bytes": 0}]
POOL = STRINGS + INTS + OTHER


def _key(name: str) -> Identity:
    return Identity(hashlib.sha256(f"phase-vector-key:{name}".encode()).digest())


def _paths(value: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [at]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*at, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*at, i))
    return out


def _mutate(rng: random.Random, body: dict[str, Any]) -> dict[str, Any]:
    body = json.loads(json.dumps(body))
    paths = _paths(body)[1:]
    top = [p for p in paths if len(p) == 1]
    path = rng.choice(top if rng.random() < 0.5 else paths)
    parent = body
    for step in path[:-1]:
        parent = parent[step]
    op = rng.random()
    if op < 0.15 and isinstance(parent, dict):
        del parent[path[-1]]
    elif op < 0.25 and isinstance(parent, dict):
        added = ["extra", "priority", "Z", "memory_available_bytes", "name", "deterministic",
                 "rootfs", "providers", "observed_addresses", "reachability"]
        parent[rng.choice(added)] = rng.choice(POOL)
    else:
        parent[path[-1]] = json.loads(json.dumps(rng.choice(POOL)))
    return body


def test_verdicts_agree_on_resigned_mutations(php: str, tmp_path: Path) -> None:  # noqa: F811
    rng = random.Random(14)
    files = []
    for doc in sorted((VECTORS / "valid").glob("*.json")):
        env = json.loads(doc.read_bytes())
        signers = [_key(n) for n in SIGNERS[env["type"]]]
        for i in range(150):
            body = _mutate(rng, env["body"])
            out = tmp_path / f"{doc.stem}-{i:02d}.json"
            out.write_text(json.dumps(envelope.sign(env["type"], body, signers)))
            files.append(out)
    rogue = _key("rogue").node_id
    targeted = [("receipt", "worker", rogue), ("receipt", "completed", "2199-01-01T00:00:00Z"),
                ("receipt", "completed", "2026-11-28T00:04:59Z"),
                ("receipt", "completed", "2026-11-28T00:05:01Z"),
                ("node_record", "node_id", rogue),
                ("job_manifest", "created", "2199-01-01T00:00:00Z"),
                ("job_manifest", "expires", "2026-11-28T00:00:00Z"),
                ("job_manifest", "expires", "2026-11-28T00:00:01Z"),
                ("boot_manifest", "expires", "2001-01-01T00:00:00Z"),
                ("boot_manifest", "created", "2099-12-31T00:00:00Z"),
                ("job_manifest", "name", "é" * 128), ("job_manifest", "name", "😀" * 129),
                ("boot_manifest", "cmdline", "é/\u2028" * 1365),
                ("boot_manifest", "mirrors", ["https://m.example/\u00a0x"]),
                ("boot_manifest", "mirrors", ["https://m.example/\u2028x"]),
                ("node_record", "capabilities", {"arch": "x", "cpu_cores": 1, "memory_bytes": 0,
                                                 "runtimes": [], "features": [], "gpu": {"n": 1}})]
    for i, (doc_type, field, value) in enumerate(targeted):
        env = json.loads((VECTORS / "valid" / f"{doc_type}.json").read_bytes())
        env["body"][field] = value
        out = tmp_path / f"targeted-{i:02d}.json"
        signers = [_key(n) for n in SIGNERS[doc_type]]
        out.write_text(json.dumps(envelope.sign(doc_type, env["body"], signers)))
        files.append(out)
    keys = VECTORS / "keyring.toml"
    python = _phase_verify(files, keys, now=NOW)
    php_side = _php_verify(php, files, keys, now=NOW)
    assert set(python) == set(php_side) == {str(f) for f in files}
    differ = {Path(f).name: (python[f], php_side[f], json.loads(Path(f).read_text())["body"])
              for f in python if python[f] != php_side[f]}
    assert not differ, json.dumps(differ, indent=1, ensure_ascii=False)[:6000]
    verdicts = {v for v, _ in python.values()}
    assert {"ok", "malformed", "untrusted_signer", "expired", "not_yet_valid"} <= verdicts
    assert sum(v == "ok" for v, _ in python.values()) >= 20
