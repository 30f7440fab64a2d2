from __future__ import annotations

import hashlib
import io
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from phase_core import log
from phase_core.cas import ContentStore
from tests.phase_fetch.badserver import BadServer
from tests.records import check_stdout

FAST = ["--connect-timeout=2", "--read-timeout=0.3", "--retries=1", "--backoff=0"]


def cid(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def blob(n: int, seed: int = 1) -> bytes:
    """Deterministic pseudo-random bytes."""
    out = bytearray()
    h = seed.to_bytes(8, "big")
    while len(out) < n:
        h = hashlib.sha256(h).digest()
        out += h * 64
    return bytes(out[:n])


def store_is_sound(root: Path) -> list[str]:
    """Every blob in the store hashes to its name; returns the ids held."""
    ids = []
    base = root / "sha256"
    for sub in sorted(base.iterdir()) if base.exists() else []:
        for f in sorted(sub.iterdir()):
            name = f"sha256:{sub.name}{f.name}"
            assert cid(f.read_bytes()) == name, f"CAS holds {f} whose bytes do not match"
            ids.append(name)
    return ids


def tls_badserver(tmp_path: Path, name: str) -> Iterator[tuple[BadServer, Path]]:
    """A BadServer behind TLS with a throw-away self-signed certificate for ``name``
    (a DNS name, or ``IP:<address>``); yields the server and the certificate's path."""
    import ssl
    import subprocess

    san = name if name.startswith("IP:") else f"DNS:{name}"
    key, crt = tmp_path / "k.pem", tmp_path / "c.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(crt), "-days", "1", "-subj",
                    f"/CN={san.split(':', 1)[1]}", "-addext", f"subjectAltName={san}"],
                   check=True, capture_output=True)
    server = BadServer()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(crt, key)
    server._server.socket = ctx.wrap_socket(server._server.socket, server_side=True)
    with server:
        yield server, crt


@pytest.fixture
def server() -> Iterator[BadServer]:
    with BadServer() as s:
        yield s


@pytest.fixture
def cas(tmp_path: Path) -> Path:
    return tmp_path / "cas"


class Run:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code = code
        self.out = out
        self.err = err

    @property
    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out.splitlines() if line.strip()]

    def events(self, name: str) -> list[dict[str, Any]]:
        out = []
        for line in self.err.splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("event") == name:
                out.append(rec)
        return out


@pytest.fixture
def run(cas: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
        ) -> Callable[..., Run]:
    """Run phase-fetch in-process through its CLI; logs at -vv so events can be asserted."""
    from phase_fetch.cli import cli

    def go(*argv: str, stdin: bytes = b"", cas_dir: Path | None = None) -> Run:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
        capsys.readouterr()
        code = cli([*argv, f"--cas={cas_dir or cas}", "-vv"])
        out, err = capsys.readouterr()
        log.configure("phase", 0)
        check_stdout(out, f"phase-fetch {' '.join(argv)[:80]}", argv)
        return Run(code, out, err)

    return go


@pytest.fixture
def store(cas: Path) -> ContentStore:
    return ContentStore(cas)
