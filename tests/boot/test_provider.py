"""plasmd.provider: the HTTP boot provider and the boot-manifest signer."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from phase_core import envelope, identity
from phase_core.cas import ContentStore
from phase_core.documents import Policy, verify
from phase_core.errors import PhaseError, UsageError
from phase_core.trust import Keyring
from plasmd.provider import Manifests, ProviderServer, serve, sign_boot_manifest

NOW = 1_800_000_000


@pytest.fixture
def keys(tmp_path: Path) -> list[Path]:
    out = []
    for n in (1, 2):
        k = tmp_path / f"signer-{n}.key"
        identity.create(k)
        out.append(k)
    return out


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    k = tmp_path / "vmlinuz"
    k.write_bytes(os.urandom(300_000))
    i = tmp_path / "initrd"
    i.write_bytes(b"initramfs " * 5000)
    return {"kernel": k, "initramfs": i}


@pytest.fixture
def signed(tmp_path: Path, keys: list[Path], files: dict[str, Path]) -> dict[str, Any]:
    return sign_boot_manifest(kernel=files["kernel"], initramfs=files["initramfs"],
                              cmdline="console=ttyS0 phase.stage=node", keys=keys,
                              state_file=tmp_path / "versions.json",
                              mirrors=["http://10.0.2.2:8080"], cas=ContentStore(tmp_path / "cas"),
                              manifests_dir=tmp_path / "manifests", now=NOW)


@pytest.fixture
def server(tmp_path: Path, signed: dict[str, Any]) -> Iterator[ProviderServer]:
    s = serve(ContentStore(tmp_path / "cas"), tmp_path / "manifests")
    try:
        yield s
    finally:
        s.stop()


def get(server: ProviderServer, path: str, method: str = "GET",
        headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    host, port = server.server_address[:2]
    c = http.client.HTTPConnection(str(host), int(port), timeout=10)
    try:
        c.request(method, path, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def keyring(keys: list[Path], threshold: int = 2) -> Keyring:
    kr = Keyring.parse(f"[thresholds]\nboot-signer = {threshold}\n".encode())
    for n, k in enumerate(keys):
        kr = kr.with_key(f"s{n}", identity.load(k).node_id, ["boot-signer"])
    return kr


# -- signing ----------------------------------------------------------------------
def test_signed_manifest_verifies_and_names_the_files(signed: dict[str, Any], keys: list[Path],
                                                      files: dict[str, Path]) -> None:
    doc = verify(signed, Policy(keyring=keyring(keys), now=NOW + 10,
                                expected_type="boot_manifest"))
    for name in ("kernel", "initramfs"):
        data = files[name].read_bytes()
        assert doc.body[name] == {"id": "sha256:" + hashlib.sha256(data).hexdigest(),
                                  "size": len(data)}
    assert doc.body["version"] == 1 and doc.body["cmdline"] == "console=ttyS0 phase.stage=node"
    assert doc.body["mirrors"] == ["http://10.0.2.2:8080"]


def test_version_bumps_and_never_goes_back(tmp_path: Path, keys: list[Path],
                                           files: dict[str, Path],
                                           signed: dict[str, Any]) -> None:
    kw = dict(kernel=files["kernel"], initramfs=files["initramfs"], cmdline="x", keys=keys,
              state_file=tmp_path / "versions.json", now=NOW)
    assert sign_boot_manifest(**kw)["body"]["version"] == 2  # type: ignore[arg-type]
    assert sign_boot_manifest(**kw, version=10)["body"]["version"] == 10  # type: ignore[arg-type]
    assert sign_boot_manifest(**kw)["body"]["version"] == 11  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        sign_boot_manifest(**kw, version=11)  # type: ignore[arg-type]
    # channels are counted separately
    other = sign_boot_manifest(**kw, channel="beta")  # type: ignore[arg-type]
    assert other["body"]["version"] == 1


def test_signing_writes_cas_and_manifest_file(tmp_path: Path, signed: dict[str, Any]) -> None:
    cas = ContentStore(tmp_path / "cas")
    assert cas.has(signed["body"]["kernel"]["id"]) and cas.has(signed["body"]["initramfs"]["id"])
    on_disk = json.loads((tmp_path / "manifests/stable/x86_64/manifest.json").read_text())
    assert on_disk == signed


def test_signing_needs_a_real_key(tmp_path: Path, files: dict[str, Path]) -> None:
    with pytest.raises(PhaseError):
        sign_boot_manifest(kernel=files["kernel"], initramfs=files["initramfs"], cmdline="",
                           keys=[tmp_path / "nope.key"], state_file=tmp_path / "v.json")


# -- serving ----------------------------------------------------------------------
def test_serves_the_signed_manifest(server: ProviderServer, signed: dict[str, Any]) -> None:
    status, hdrs, data = get(server, "/stable/x86_64/manifest.json")
    assert status == 200 and hdrs["content-type"] == "application/json"
    assert json.loads(data) == signed


def test_serves_blobs_with_content_id_and_ranges(server: ProviderServer,
                                                 signed: dict[str, Any],
                                                 files: dict[str, Path]) -> None:
    data = files["kernel"].read_bytes()
    cid = signed["body"]["kernel"]["id"]
    path = "/sha256/" + cid.split(":")[1]
    status, hdrs, got = get(server, path)
    assert status == 200 and got == data
    assert hdrs["x-content-id"] == cid and hdrs["accept-ranges"] == "bytes"
    assert int(hdrs["content-length"]) == len(data)
    status, hdrs, got = get(server, path, headers={"Range": "bytes=100-199"})
    assert status == 206 and got == data[100:200]
    assert hdrs["content-range"] == f"bytes 100-199/{len(data)}"
    status, _, got = get(server, path, headers={"Range": "bytes=1000-"})
    assert status == 206 and got == data[1000:]
    status, _, got = get(server, path, headers={"Range": "bytes=-10"})
    assert status == 206 and got == data[-10:]
    status, hdrs, _ = get(server, path, headers={"Range": f"bytes={len(data)}-"})
    assert status == 416 and hdrs["content-range"] == f"bytes */{len(data)}"
    status, _, got = get(server, path, headers={"Range": "bytes=0-1,5-9"})
    assert status == 200 and got == data  # several ranges: the whole blob
    status, hdrs, got = get(server, path, method="HEAD")
    assert status == 200 and got == b"" and int(hdrs["content-length"]) == len(data)


@pytest.mark.parametrize("path", [
    "/sha256/" + "0" * 64,                       # not in the store
    "/sha256/" + "A" * 64,                       # uppercase hex is not a content id
    "/sha256/../../etc/passwd",
    "/sha256/%2e%2e%2fetc%2fpasswd",
    "/stable/x86_64/../../../etc/passwd",
    "/../stable/x86_64/manifest.json",
    "/stable/sparc/manifest.json",               # unknown arch
    "/beta/x86_64/manifest.json",                # no such channel
    "/Stable/x86_64/manifest.json",
    "/stable/x86_64/manifest.json/",
    "/",
    "/versions.json",
    "//etc/passwd",
])
def test_anything_else_is_404(server: ProviderServer, path: str) -> None:
    status, hdrs, body = get(server, path)
    assert status == 404, path
    assert b"root:" not in body and "x-content-id" not in hdrs


def test_only_get_and_head(server: ProviderServer) -> None:
    status, hdrs, _ = get(server, "/stable/x86_64/manifest.json", method="POST")
    assert status == 405 and "GET" in hdrs["allow"]


def test_corrupt_blob_is_not_served(tmp_path: Path, server: ProviderServer,
                                    signed: dict[str, Any]) -> None:
    cid = signed["body"]["initramfs"]["id"]
    cas = ContentStore(tmp_path / "cas")
    p = cas.path_for(cid)
    data = bytearray(p.read_bytes())
    data[0] ^= 1
    p.chmod(0o644)
    p.write_bytes(bytes(data))
    status, _, body = get(server, "/sha256/" + cid.split(":")[1])
    assert status == 404 and body != bytes(data)


def test_a_newly_signed_manifest_is_served_without_restart(
        tmp_path: Path, server: ProviderServer, keys: list[Path],
        files: dict[str, Path]) -> None:
    sign_boot_manifest(kernel=files["kernel"], initramfs=files["initramfs"], cmdline="v2",
                       keys=keys, state_file=tmp_path / "versions.json",
                       cas=ContentStore(tmp_path / "cas"), manifests_dir=tmp_path / "manifests",
                       now=NOW + 5)
    _, _, data = get(server, "/stable/x86_64/manifest.json")
    assert json.loads(data)["body"]["version"] == 2


def test_manifest_in_the_wrong_slot_is_refused(tmp_path: Path, signed: dict[str, Any]) -> None:
    with pytest.raises(PhaseError):
        Manifests({("beta", "x86_64"): signed})
    # from a directory: a misplaced file is skipped (and logged), not served
    d = tmp_path / "m2" / "beta" / "x86_64"
    d.mkdir(parents=True)
    (d / "manifest.json").write_text(json.dumps(signed))
    assert Manifests(tmp_path / "m2").get("beta", "x86_64") is None
    assert Manifests({("stable", "x86_64"): signed}).get("stable", "x86_64") is not None


def test_non_boot_manifest_is_refused(tmp_path: Path, keys: list[Path]) -> None:
    env = envelope.sign("job_manifest", {"x": 1}, [identity.load(keys[0])])
    with pytest.raises(PhaseError):
        Manifests({("stable", "x86_64"): env})


def test_cli_sign_and_serve(tmp_path: Path, keys: list[Path], files: dict[str, Path]) -> None:
    r = subprocess.run([sys.executable, "-m", "plasmd.provider", "sign",
                        f"--kernel={files['kernel']}", f"--initramfs={files['initramfs']}",
                        f"--key={keys[0]}", f"--key={keys[1]}", "--cmdline=quiet",
                        f"--cas={tmp_path / 'c'}", f"--manifests={tmp_path / 'm'}"],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    env = json.loads(r.stdout)
    assert env["body"]["version"] == 1 and (tmp_path / "m" / "versions.json").exists()
    r = subprocess.run([sys.executable, "-m", "plasmd.provider", "sign",
                        f"--kernel={files['kernel']}", f"--initramfs={tmp_path / 'missing'}",
                        f"--key={keys[0]}", f"--manifests={tmp_path / 'm'}"],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 66
    p = subprocess.Popen([sys.executable, "-m", "plasmd.provider", "serve",
                          f"--cas={tmp_path / 'c'}", f"--manifests={tmp_path / 'm'}"],
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None
        rec = json.loads(p.stdout.readline())
        assert rec["type"] == "provider" and rec["url"].startswith("http://127.0.0.1:")
        host, port = rec["url"][7:].rsplit(":", 1)
        c = http.client.HTTPConnection(host, int(port), timeout=10)
        c.request("GET", "/stable/x86_64/manifest.json")
        assert json.loads(c.getresponse().read()) == env
        c.close()
    finally:
        p.terminate()
        p.wait(timeout=10)


def test_phase_fetch_gets_blobs_from_the_provider(tmp_path: Path, server: ProviderServer,
                                                  signed: dict[str, Any],
                                                  files: dict[str, Path]) -> None:
    """The provider is a phase-fetch mirror: resumable, checked by content id."""
    from phase_fetch import Fetcher, Want

    with Fetcher(ContentStore(tmp_path / "client"), mirrors=[server.url]) as f:
        got = f.fetch(Want(signed["body"]["kernel"]["id"], size=signed["body"]["kernel"]["size"]))
    assert Path(got.path).read_bytes() == files["kernel"].read_bytes()
