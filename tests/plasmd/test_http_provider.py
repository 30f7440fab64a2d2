"""The HTTP boot provider, for real: it serves only what was published, and idle
sockets cannot pile up its threads."""

from __future__ import annotations

import asyncio
import http.client
import json
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from phase_core import identity
from phase_core.aio import quic
from phase_core.canonical import content_id
from phase_core.cas import ContentStore
from phase_core.identity import Identity
from phase_fetch.peer import pull
from plasmd.boundedhttp import MAX_CONNECTIONS
from plasmd.provider import sign_boot_manifest
from tests.conftest import script
from tests.plasmd.conftest import HELLO, init_home, prepare_home, start_node


def http_get(url: str, path: str) -> tuple[int, bytes]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    c = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def boot_sign(home: Path, tmp: Path) -> dict[str, object]:
    kernel, initrd = tmp / "vmlinuz", tmp / "initrd.img"
    kernel.write_bytes(b"K" * 3000)
    initrd.write_bytes(b"I" * 4000)
    identity.create(tmp / "signer.key")
    r = subprocess.run([script("plasmd"), "boot-sign", f"--home={home}", f"--kernel={kernel}",
                        f"--initramfs={initrd}", f"--key={tmp / 'signer.key'}"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return dict(json.loads(r.stdout))


def test_http_serves_published_artifacts_only_never_a_jobs_private_stdin(tmp_path):
    home, client = tmp_path / "node", tmp_path / "client"
    prepare_home(home, mdns=False, boot_http="127.0.0.1:0")
    env = boot_sign(home, tmp_path)
    init_home(client)
    client_id = identity.load(client / "key").node_id
    r = subprocess.run([script("phase-key"), "trust", f"--keyring={home / 'keyring.toml'}",
                        "--name=client", "--role=job-submitter", f"--key={client / 'key'}"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    secret = b"a private stdin: the submitter's own data\n"
    (tmp_path / "secret.txt").write_bytes(secret)
    node = start_node(home)
    try:
        r = subprocess.run([script("plasmd"), "submit", f"--home={client}", str(HELLO),
                            f"--peer={node.peer}", f"--stdin={tmp_path / 'secret.txt'}"],
                           capture_output=True, timeout=120)
        assert r.returncode == 0, r.stderr
        sid = content_id(secret)
        assert ContentStore(home / "cas").has(sid)  # the job's stdin is stored there
        url = str(node.started["boot_http"])

        # the same blob by a stranger over the transport: refused ...
        async def stranger_get() -> BaseException | None:
            conn = await quic.connect("127.0.0.1", node.port, Identity.generate(),
                                      expected_node_id=node.node_id)
            try:
                class W:
                    def write(self, d: bytes) -> None:
                        raise AssertionError("the stranger got bytes")
                try:
                    await pull(conn.open_stream, sid, max_bytes=10_000, writer=W())
                except Exception as e:
                    return e
                return None
            finally:
                await conn.close()
        assert asyncio.run(asyncio.wait_for(stranger_get(), 30)) is not None
        # ... and over HTTP, where everyone is a stranger: 404, like an absent blob
        for cid in (sid, content_id(HELLO.read_bytes())):
            status, body = http_get(url, f"/sha256/{cid[7:]}")
            assert status == 404 and secret not in body
        # what was published is served
        kid = env["body"]["kernel"]["id"]  # type: ignore[index]
        assert http_get(url, f"/sha256/{kid[7:]}") == (200, b"K" * 3000)
        assert http_get(url, "/stable/x86_64/manifest.json")[0] == 200
    finally:
        assert node.stop() == 0
    assert client_id  # the submitter was trusted: the node did run its job


def threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads line")


@pytest.mark.slow
def test_idle_sockets_do_not_pile_up_threads_and_honest_gets_are_served(tmp_path):
    keyf = tmp_path / "signer.key"
    identity.create(keyf)
    (tmp_path / "k").write_bytes(b"k" * 100)
    (tmp_path / "i").write_bytes(b"i" * 100)
    env = sign_boot_manifest(kernel=tmp_path / "k", initramfs=tmp_path / "i", cmdline="",
                             keys=[keyf], state_file=tmp_path / "m" / "versions.json",
                             cas=ContentStore(tmp_path / "cas"), manifests_dir=tmp_path / "m")
    proc = subprocess.Popen([sys.executable, "-m", "plasmd.provider", "serve",
                             f"--cas={tmp_path / 'cas'}", f"--manifests={tmp_path / 'm'}"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    socks: list[socket.socket] = []
    try:
        assert proc.stdout is not None
        url = json.loads(proc.stdout.readline())["url"]
        host, port = url.removeprefix("http://").rsplit(":", 1)
        base = threads(proc.pid)
        for _ in range(300):  # connect and say nothing
            socks.append(socket.create_connection((host, int(port)), timeout=30))
        # an honest client right behind them is served (accept order is FIFO, so
        # every idle socket before it has been admitted or evicted by then)
        kid = env["body"]["kernel"]["id"]
        assert http_get(url, f"/sha256/{kid[7:]}") == (200, b"k" * 100)
        # the evicted idle sockets were closed by the server: they read EOF
        closed: set[int] = set()
        deadline = time.monotonic() + 60
        while len(closed) < 300 - MAX_CONNECTIONS and time.monotonic() < deadline:
            ready, _, _ = select.select([s for s in socks if s.fileno() not in closed],
                                        [], [], 1.0)
            for s in ready:
                if s.recv(1) == b"":
                    closed.add(s.fileno())
        assert len(closed) >= 300 - MAX_CONNECTIONS
        # and their threads are gone: bounded by the cap, not by the sockets
        bound = base + MAX_CONNECTIONS + 1
        for _ in range(600):
            if threads(proc.pid) <= bound:
                break
            time.sleep(0.05)
        assert threads(proc.pid) <= bound, (threads(proc.pid), bound)
        assert http_get(url, "/stable/x86_64/manifest.json")[0] == 200
    finally:
        for s in socks:
            s.close()
        proc.terminate()
        proc.wait(30)
