"""phase-discover boot: signed manifests from an HTTP provider, ready for phase-verify."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from phase_core import boot, envelope
from phase_core.identity import Identity
from phase_discover import cli

SIGNER = Identity(bytes([7]) * 32)


def manifest(channel: str = "stable", tamper: bool = False) -> dict[str, Any]:
    art = {"id": "sha256:" + "cd" * 32, "size": 4}
    body = boot.build(channel=channel, arch="x86_64", version=3, now=int(time.time()) - 10,
                      lifetime_s=3600, kernel=art, initramfs=art, cmdline="quiet", mirrors=[])
    env = envelope.sign(boot.TYPE, body, [SIGNER])
    if tamper:
        env["body"]["cmdline"] = "init=/bin/sh"
    return env


@pytest.fixture
def provider() -> Iterator[dict[str, Any]]:
    served: dict[str, Any] = {}

    class H(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            doc = served.get(self.path)
            if doc is None:
                self.send_error(404)
                return
            data = json.dumps(doc).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *a: Any) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    served["url"] = f"http://127.0.0.1:{srv.server_address[1]}"
    try:
        yield served
    finally:
        srv.shutdown()
        srv.server_close()


def test_provider_manifest_is_streamed_for_phase_verify(run_tool, provider) -> None:  # type: ignore[no-untyped-def]
    env = manifest()
    provider["/stable/x86_64/manifest.json"] = env
    r = run_tool(cli, ["boot", "--channel=stable", "--arch=x86_64", "--via=dht",
                       f"--provider={provider['url']}", "--timeout=3"])
    assert r.code == 0, r.err
    [rec] = r.records
    assert rec["type"] == "boot" and rec["version"] == 3 and rec["source"] == "http"
    assert rec["envelope"] == env and rec["signers"] == [SIGNER.node_id]
    assert rec["provider_url"] == provider["url"]


def test_tampered_or_misfiled_manifest_is_not_reported(run_tool, provider) -> None:  # type: ignore[no-untyped-def]
    provider["/stable/x86_64/manifest.json"] = manifest(tamper=True)
    provider["/beta/x86_64/manifest.json"] = manifest(channel="stable")  # wrong channel
    for ch in ("stable", "beta"):
        r = run_tool(cli, ["boot", f"--channel={ch}", "--arch=x86_64", "--via=dht",
                           f"--provider={provider['url']}", "--timeout=2"])
        assert r.code == 69 and r.out == ""
    assert any(x.get("error") in ("bad_signature", "wrong_key") for x in r.logs)
