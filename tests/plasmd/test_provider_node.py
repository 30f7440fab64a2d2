"""A node as a boot provider: boot-sign publishes from the home; the running node serves
the manifest and artifacts over HTTP and the transport, names them in its node record,
and (internet mode) stores the manifest in the DHT."""

import asyncio
import json
import subprocess
import urllib.request

from phase_core import identity
from phase_core.aio import quic
from phase_core.canonical import content_id
from phase_core.cas import ContentStore
from phase_core.identity import Identity
from phase_fetch.peer import pull
from tests.conftest import script
from tests.plasmd.conftest import prepare_home, start_node


def test_boot_sign_then_serve_over_http_transport_and_dht(tmp_path):
    home = tmp_path / "provider"
    prepare_home(home, mode="internet", mdns=False, boot_http="127.0.0.1:0")
    kernel, initrd = tmp_path / "vmlinuz", tmp_path / "initrd.img"
    kernel.write_bytes(b"K" * 5000)
    initrd.write_bytes(b"I" * 7000)
    keys = []
    for name in ("s1", "s2"):
        identity.create(tmp_path / f"{name}.key")
        keys.append(f"--key={tmp_path / f'{name}.key'}")
    for expected_version in (1, 2):
        r = subprocess.run([script("plasmd"), "boot-sign", f"--home={home}",
                            f"--kernel={kernel}", f"--initramfs={initrd}", *keys,
                            "--cmdline=console=ttyS0", "--mirror=http://10.0.2.2:8080/"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        env = json.loads(r.stdout)
        assert env["body"]["version"] == expected_version and len(env["signatures"]) == 2
    assert env["body"]["kernel"] == {"id": content_id(b"K" * 5000), "size": 5000}

    node = start_node(home)
    try:
        url = node.started["boot_http"]
        with urllib.request.urlopen(f"{url}/stable/x86_64/manifest.json", timeout=10) as resp:
            assert json.loads(resp.read())["body"]["version"] == 2
        kid = env["body"]["kernel"]["id"]
        with urllib.request.urlopen(f"{url}/sha256/{kid[7:]}", timeout=10) as resp:
            assert resp.read() == b"K" * 5000 and resp.headers["X-Content-Id"] == kid

        # any authenticated peer may fetch published artifacts over the transport
        async def fetch() -> bytes:
            conn = await quic.connect("127.0.0.1", node.port, Identity.generate(),
                                      expected_node_id=node.node_id)
            try:
                buf = bytearray()

                class W:
                    def write(self, d: bytes) -> None:
                        buf.extend(d)
                await pull(conn.open_stream, kid, max_bytes=10_000, writer=W())
                return bytes(buf)
            finally:
                await conn.close()
        assert asyncio.run(asyncio.wait_for(fetch(), 30)) == b"K" * 5000

        # discovery: the HTTP provider, and the DHT
        r = subprocess.run([script("phase-discover"), "boot", "--channel=stable",
                            "--arch=x86_64", f"--provider={url}", "--via=dht",
                            f"--bootstrap=127.0.0.1:{node.port}", "--timeout=8"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr[-2000:]
        recs = [json.loads(x) for x in r.stdout.splitlines()]
        boots = [x for x in recs if x["type"] == "boot"]
        assert {x["version"] for x in boots} == {2}
        providers = [x for x in recs if x["type"] == "boot_provider"]
        assert any(p["node_id"] == node.node_id and p.get("url") == url for p in providers)
    finally:
        node.stop()
    assert ContentStore(home / "cas").has(kid)


def test_phase_fetch_pulls_from_a_peer_through_peer_source(tmp_path):
    """phase_fetch.peer.PeerSource (what a worker fetches job inputs with): the
    Fetcher (threaded) pulls a blob from a node over the transport into its own
    store, verified; an id the peer does not have is Unavailable."""
    from phase_core.errors import Unavailable
    from phase_fetch.fetcher import Fetcher
    from phase_fetch.peer import PeerSource
    from phase_fetch.want import Want

    home = tmp_path / "worker"
    prepare_home(home, open=True, mdns=False)
    data = bytes(range(256)) * 1000
    cid = ContentStore(home / "cas").put_bytes(data)
    node = start_node(home)
    try:
        async def main() -> tuple[object, object]:
            conn = await quic.connect("127.0.0.1", node.port, Identity.generate(),
                                      expected_node_id=node.node_id)
            src = PeerSource(asyncio.get_running_loop(), conn.open_stream, node.node_id,
                             timeout_s=30)
            try:
                with Fetcher(ContentStore(tmp_path / "mine"), peers=[src]) as f:
                    got = await asyncio.to_thread(f.fetch, Want(cid, len(data)))
                with Fetcher(ContentStore(tmp_path / "mine2"), peers=[src]) as f:
                    try:
                        await asyncio.to_thread(f.fetch, Want(content_id(b"absent"), 6))
                        missing: object = None
                    except Unavailable as e:
                        missing = e
                return got, missing
            finally:
                await conn.close()
        got, missing = asyncio.run(asyncio.wait_for(main(), 60))
        assert got.source.startswith("peer:") and got.size == len(data)  # type: ignore[attr-defined]
        assert ContentStore(tmp_path / "mine").read(cid) == data
        assert isinstance(missing, Unavailable)
    finally:
        node.stop()
