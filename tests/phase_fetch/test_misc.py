"""CAS housekeeping, TLS verification, progress, the library API and the console script."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from phase_core.cas import ContentStore
from phase_core.errors import Unavailable
from phase_fetch import Fetcher, Options, Want
from phase_fetch.progress import Progress
from phase_fetch.sink import PartialWriter
from tests.phase_fetch.badserver import Route
from tests.phase_fetch.conftest import FAST, blob, cid, tls_badserver


def test_cas_size_list_verify_gc(run, store, cas):
    a, b = blob(1000, 1), blob(3000, 2)
    ida, idb = store.put_bytes(a), store.put_bytes(b)
    old = time.time() - 3 * 86400
    os.utime(store.path_for(ida), (old, old))  # a is the least recently used
    (cas / "partial").mkdir()
    stale = cas / "partial" / ("0" * 64)
    stale.write_bytes(b"x" * 10)
    os.utime(stale, (old, old))
    r = run("cas", "size")
    assert r.code == 0
    assert r.records == [{"v": 1, "type": "cas_size", "path": str(cas), "blobs": 2,
                          "size_bytes": 4000, "partial_bytes": 10}]
    assert {x["id"] for x in run("cas", "list").records} == {ida, idb}
    assert run("cas", "verify").code == 0
    store.path_for(idb).write_bytes(b"y" * 3000)
    r = run("cas", "verify", idb)
    assert r.code == 1 and r.records[0]["ok"] is False
    assert not store.has(idb)  # quarantined
    store.put_bytes(b)
    r = run("cas", "gc", "3500")
    assert r.code == 0
    assert r.records[0]["removed"] == [ida] and r.records[0]["removed_partials"] == 1
    assert r.records[0]["size_bytes"] == 3000 and not stale.exists()
    assert run("cas", "verify", "sha256:nope").code == 65


@pytest.fixture
def tls_server(tmp_path: Path):
    yield from tls_badserver(tmp_path, "IP:127.0.0.1")


def test_https_mirror_with_untrusted_certificate_is_refused(tls_server, run, cas):
    server, crt = tls_server
    data = blob(5000, 7)
    server.routes[f"/sha256/{cid(data)[7:]}"] = Route(data)
    url = f"https://127.0.0.1:{server.port}"
    r = run("get", cid(data), f"--mirror={url}", "--retries=0", "--connect-timeout=2")
    assert r.code == 69
    assert r.events("fetch.source_failed")[0]["error"] == "tls_verify_failed"
    assert server.log == []  # no request was sent over the unverified connection
    # trusted through the system's mechanism (SSL_CERT_FILE), the same mirror works
    os.environ["SSL_CERT_FILE"] = str(crt)
    try:
        r = run("get", cid(data), f"--mirror={url}", "--retries=0", "--connect-timeout=2")
    finally:
        del os.environ["SSL_CERT_FILE"]
    assert r.code == 0, r.err


def test_library_api_dedupes_concurrent_requests(server, cas):
    data = blob(200_000, 8)
    server.routes[f"/sha256/{cid(data)[7:]}"] = Route(data, "slow", chunk=20_000,
                                                       delay_s=0.002)
    store = ContentStore(cas)
    with Fetcher(store, mirrors=[server.url], options=Options(jobs=4)) as f:
        results = f.fetch_all([Want(cid(data), len(data))] * 5)
        assert all(r is results[0] for r in results)
        with pytest.raises(Unavailable):
            f.fetch(Want(cid(b"absent")))
    assert len(server.requests(f"/sha256/{cid(data)[7:]}")) == 1
    assert results[0].path.read_bytes() == data


def test_busy_partial_falls_back_to_a_private_temp_file(cas):
    store = ContentStore(cas)
    data = blob(1000, 9)
    with PartialWriter(store, cid(data), len(data), 1 << 20) as first:
        first.write(data[:10])
        with PartialWriter(store, cid(data), len(data), 1 << 20) as second:
            assert not second.resumable and second.offset == 0
            second.write(data)
            assert second.commit() == store.path_for(cid(data))
        assert first.resumable and first.offset == 10
    assert store.read(cid(data)) == data


def test_progress_line_shows_bytes_rate_and_eta(cas):
    store = ContentStore(cas)
    with PartialWriter(store, cid(b"x" * 100), 4 << 20, 4 << 20) as sink:
        stream = io.StringIO()
        p = Progress({sink.id: sink}, stream)
        p.line()
        sink.write(b"\0" * (1 << 20))
        time.sleep(0.01)
        line = p.line()
    assert line.startswith(sink.id[7:19]) and "1.0/4.0 MiB" in line
    assert "MiB/s" in line and "ETA" in line


def test_console_script_smoke(tmp_path):
    exe = Path(sys.executable).with_name("phase-fetch")
    r = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=False)
    assert r.returncode == 0 and "Exit status:" in r.stdout
    r = subprocess.run([str(exe), "get", "sha256:bad", f"--cas={tmp_path / 'c'}"],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 65 and r.stdout == ""
    assert '"error": "bad_content_id"' in r.stderr


def test_stdin_pipeline_subprocess(server, tmp_path):
    data = blob(1000, 11)
    server.routes[f"/sha256/{cid(data)[7:]}"] = Route(data)
    exe = Path(sys.executable).with_name("phase-fetch")
    line = f'{{"v":1,"type":"fetch","id":"{cid(data)}","mirrors":["{server.url}"]}}\n'
    r = subprocess.run([str(exe), f"--cas={tmp_path / 'c'}"], input=line,
                       capture_output=True, text=True, check=False, timeout=30)
    assert r.returncode == 0, r.stderr
    assert [x.split('"type":"')[1].split('"')[0] for x in r.stdout.splitlines()] == \
        ["blob", "fetch"]




def test_credentials_in_mirror_urls_never_reach_logs_or_records():
    from phase_fetch.mirror import HttpMirror
    from phase_fetch.want import redact
    assert redact("https://user:secret@m.example:8443/p?q") == "https://m.example:8443/p?REDACTED"
    assert HttpMirror("http://u:pw@127.0.0.1/x").name == "http://127.0.0.1/x"


def test_base_mirror_with_a_query_string_keeps_the_query_after_the_blob_path(server, run, cas):
    # A presigned base URL (token in the query): the blob path goes before the query.
    data = blob(700, 12)
    path = f"/pre/sha256/{cid(data)[7:]}?token=abc"
    server.routes[path] = Route(data)
    r = run("get", cid(data), f"--mirror={server.url}/pre/?token=abc#frag", *FAST)
    assert r.code == 0, r.err
    assert [q.path for q in server.log] == [path]
    assert "abc" not in r.err and "abc" not in r.out
