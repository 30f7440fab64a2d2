"""Mirrors that drip, bodies that never end, tokens in URLs, sizes only the server knows.

The slow-server tests run phase-fetch as a subprocess: on code without the deadline
they would run until the guard timeout kills them (the guard turns a hang into a
failure; no assertion is about time).
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from phase_core.cas import ContentStore
from phase_fetch.mirror import HttpMirror, HttpOptions
from phase_fetch.progress import Progress
from phase_fetch.sink import PARTIAL_DIR, PartialWriter, sweep
from phase_fetch.want import Want, check_mirror, redact
from tests.phase_fetch.badserver import BadServer, Route
from tests.phase_fetch.conftest import Run, blob, cid, store_is_sound

DATA = blob(64 << 10, 7)
ID = cid(DATA)
HEX = ID[7:]
PATH = f"/sha256/{HEX}"
GUARD_S = 120  # only a hang guard


def fetch(cas: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "phase_fetch", "get", ID, f"--cas={cas}",
                           "-v", *args], capture_output=True, text=True, timeout=GUARD_S,
                          check=False)


def events(err: str, name: str) -> list[dict[str, Any]]:
    return Run(0, "", err).events(name)


# -- 4: a deadline per source -------------------------------------------------------------
def test_a_dripping_response_head_times_out_then_the_next_source(server: BadServer,
                                                                 cas: Path) -> None:
    drip = server.routes["/drip" + PATH] = Route(DATA, "drip_head", delay_s=0.3)
    server.routes["/good" + PATH] = Route(DATA)
    r = fetch(cas, f"--mirror={server.url}/drip", f"--mirror={server.url}/good",
              "--read-timeout=1", "--retries=0")
    assert r.returncode == 0, r.stderr
    failed = events(r.stderr, "fetch.source_failed")
    assert [(f["source"], f["error"]) for f in failed] == [(f"{server.url}/drip", "timeout")]
    assert drip.hung_up.wait(GUARD_S)  # phase-fetch left while the head was still coming
    assert store_is_sound(cas) == [ID]


def test_a_dripping_body_is_too_slow_then_the_next_source(server: BadServer,
                                                          cas: Path) -> None:
    drip = server.routes["/drip" + PATH] = Route(DATA, "drip", delay_s=0.3)
    server.routes["/good" + PATH] = Route(DATA)
    r = fetch(cas, f"--size={len(DATA)}", f"--mirror={server.url}/drip",
              f"--mirror={server.url}/good", "--read-timeout=1", "--retries=0")
    assert r.returncode == 0, r.stderr
    failed = events(r.stderr, "fetch.source_failed")
    assert [f["error"] for f in failed] == ["too_slow"]
    assert drip.hung_up.wait(GUARD_S) and drip.sent < len(DATA)
    assert store_is_sound(cas) == [ID]


def test_a_dripping_mirror_alone_ends_with_a_timeout(server: BadServer, cas: Path) -> None:
    server.routes[PATH] = Route(DATA, "drip", delay_s=0.3)
    r = fetch(cas, f"--mirror={server.url}", "--read-timeout=1", "--retries=0")
    assert r.returncode == 75, r.stderr
    assert "too_slow" in r.stderr


def test_the_source_deadline_covers_retries(server: BadServer, cas: Path) -> None:
    big = blob(8 << 20, 3)
    big_id = cid(big)
    # fast enough for the rate floor, too slow to finish in one second
    server.routes[f"/slow/sha256/{big_id[7:]}"] = Route(big, "slow", chunk=4096, delay_s=0.01)
    server.routes[f"/good/sha256/{big_id[7:]}"] = Route(big)
    r = subprocess.run([sys.executable, "-m", "phase_fetch", "get", big_id, f"--cas={cas}",
                        "-v", f"--mirror={server.url}/slow", f"--mirror={server.url}/good",
                        "--source-timeout=1", "--retries=5", "--backoff=0"],
                       capture_output=True, text=True, timeout=GUARD_S, check=False)
    assert r.returncode == 0, r.stderr
    failed = events(r.stderr, "fetch.source_failed")
    assert [f["error"] for f in failed] == ["source_deadline"]
    assert len(server.requests(f"/slow/sha256/{big_id[7:]}")) == 1  # no retry past it
    # the good mirror resumed from what the slow one had delivered
    good = server.requests(f"/good/sha256/{big_id[7:]}")
    assert len(good) == 1 and good[0].range is not None


def test_rate_floor_can_be_turned_off(server: BadServer, cas: Path) -> None:
    small = b"tiny blob"
    server.routes[f"/sha256/{cid(small)[7:]}"] = Route(small, "drip", delay_s=0.05)
    r = subprocess.run([sys.executable, "-m", "phase_fetch", "get", cid(small),
                        f"--cas={cas}", f"--mirror={server.url}", "--read-timeout=0.3",
                        "--min-rate=0", "--retries=0"],
                       capture_output=True, text=True, timeout=GUARD_S, check=False)
    assert r.returncode == 0, r.stderr


# -- 5: partials are bounded and cleaned --------------------------------------------------
def test_unknown_size_never_writes_a_resumable_partial(cas: Path) -> None:
    store = ContentStore(cas)
    with PartialWriter(store, ID, None, 1 << 30) as sink:
        sink.write(b"x" * 1000)
        assert sink.path.parent == cas / "tmp" and sink.path.name.startswith("fetch-")
        assert not sink.resumable
    assert not sink.path.exists()
    assert not (cas / PARTIAL_DIR).exists() or not list((cas / PARTIAL_DIR).iterdir())


def test_an_endless_body_is_capped_and_leaves_nothing(server: BadServer, cas: Path) -> None:
    server.routes[PATH] = Route(DATA, "endless", chunk=1 << 16)
    r = fetch(cas, f"--mirror={server.url}", "--max-bytes=4194304", "--retries=0")
    assert r.returncode == 1 and "too_large" in r.stderr, r.stderr
    assert list((cas / "tmp").iterdir()) == []
    assert not (cas / PARTIAL_DIR).exists() or not list((cas / PARTIAL_DIR).iterdir())


def test_a_killed_endless_download_is_swept_by_the_next_run(server: BadServer,
                                                            cas: Path) -> None:
    server.routes[PATH] = Route(DATA, "endless", chunk=1 << 16)
    proc = subprocess.Popen([sys.executable, "-m", "phase_fetch", "get", ID, f"--cas={cas}",
                             f"--mirror={server.url}", "-q"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        tmp = cas / "tmp"
        while proc.poll() is None:  # until it has written a MiB somewhere
            held = [p for p in tmp.glob("fetch-*")] if tmp.is_dir() else []
            if held and held[0].stat().st_size >= 1 << 20:
                break
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=GUARD_S)
    assert proc.returncode == -signal.SIGKILL
    assert not (cas / PARTIAL_DIR).exists() or not list((cas / PARTIAL_DIR).iterdir())
    left = list((cas / "tmp").glob("fetch-*"))
    assert left and left[0].stat().st_size >= 1 << 20  # what the kill left behind
    server.routes[PATH] = Route(DATA)
    r = fetch(cas, f"--mirror={server.url}", f"--size={len(DATA)}")
    assert r.returncode == 0, r.stderr
    assert list((cas / "tmp").iterdir()) == []  # the next run swept it
    assert events(r.stderr, "fetch.partials_swept")[0]["temps"] == 1


def test_sweep_keeps_locked_and_recent_within_count_and_size(cas: Path) -> None:
    store = ContentStore(cas)
    d = cas / PARTIAL_DIR
    d.mkdir(parents=True)
    now = 1_000_000_000.0
    for i in range(10):  # partial i is i hours old, 100 bytes
        p = d / f"{i:064x}"
        p.write_bytes(b"x" * 100)
        os.utime(p, (now - i * 3600, now - i * 3600))
    old = d / ("f" * 64)
    old.write_bytes(b"x")
    os.utime(old, (now - 3 * 86400, now - 3 * 86400))
    empty = d / ("e" * 64)
    empty.write_bytes(b"")
    # a live writer's partial (locked), older than everything: never touched
    with PartialWriter(store, "sha256:" + "a" * 64, 10, 10) as live:
        live.write(b"y" * 5)
        os.utime(live.path, (now - 9 * 86400, now - 9 * 86400))
        done = sweep(store, now=now, max_count=6, max_bytes=450)
        assert live.path.exists()
    names = sorted(p.name for p in d.iterdir() if p != live.path)
    # age and empties first, then the oldest beyond 6 files, then beyond 450 bytes
    assert names == [f"{i:064x}" for i in range(4)]
    assert done.partials == 8


def test_a_swept_partial_is_not_written_through_a_stale_inode(cas: Path) -> None:
    store = ContentStore(cas)
    with PartialWriter(store, ID, len(DATA), len(DATA)) as w:
        w.write(DATA[:10])
    sweep(store, now=0.0 + 10**10)  # ancient: removed
    with PartialWriter(store, ID, len(DATA), len(DATA)) as w:
        assert w.offset == 0 and w.path.exists()
        w.write(DATA)
        w.commit()
    assert store.read(ID) == DATA


def test_a_private_temp_swept_before_it_is_locked_is_made_again(cas: Path, monkeypatch) -> None:
    """Two fetches of one blob at once: the second writes a private temp file. A sweep
    (a third fetch starting) may unlink that file after it is created and before it is
    locked, when it looks abandoned; the writer must not go on through the lost inode
    (its commit would fail with ENOENT, as it did for plasmd's concurrent jobs)."""
    import fcntl

    from phase_fetch import sink as sink_mod

    store = ContentStore(cas)
    real_flock = fcntl.flock
    swept: list[str] = []

    def flock_after_a_sweep(fd: int, op: int) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        if "/tmp/fetch-" in path and not swept:
            swept.append(path)
            sweep(store)  # the file is free: the sweep takes it
        real_flock(fd, op)

    with PartialWriter(store, ID, len(DATA), len(DATA)) as first:  # holds the partial
        monkeypatch.setattr(sink_mod.fcntl, "flock", flock_after_a_sweep)
        with PartialWriter(store, ID, len(DATA), len(DATA)) as second:
            monkeypatch.setattr(sink_mod.fcntl, "flock", real_flock)
            assert swept and not Path(swept[0]).exists()
            assert second.path.exists() and str(second.path) != swept[0]
            second.write(DATA)
            second.commit()
        first.write(DATA)
        first.commit()
    assert store.read(ID) == DATA


# -- 6: tokens in URLs never reach logs or records -----------------------------------------
def test_presigned_tokens_and_passwords_are_redacted(server: BadServer, cas: Path) -> None:
    token = "X-Amz-Signature=S3CR3TT0K3N"
    server.routes[f"/t/{HEX}?{token}"] = Route(DATA, "wrong")
    server.routes["/r" + PATH] = Route(DATA, "redirect", location=f"/t/{HEX}?{token}")
    server.routes["/good" + PATH] = Route(DATA)
    host = server.url.split("//", 1)[1]
    tmpl = f"http://user:PA55W0RD@{host}/t/{{hex}}?{token}"
    r = fetch(cas, f"--mirror={tmpl}", f"--mirror={server.url}/r",
              f"--mirror={server.url}/good", "-vv")
    assert r.returncode == 0, r.stderr
    for secret in ("S3CR3TT0K3N", "PA55W0RD"):
        assert secret not in r.stderr and secret not in r.stdout
    failed = events(r.stderr, "fetch.digest_mismatch")
    assert {f["source"] for f in failed} == {f"http://{host}/t/{{hex}}?REDACTED",
                                              f"{server.url}/r"}
    assert events(r.stderr, "fetch.redirect")[0]["to"] == f"{server.url}/t/{HEX}?REDACTED"


def test_redact_handles_any_string() -> None:
    assert redact("https://a:b@h/p?t=1#f") == "https://h/p?REDACTED"
    assert redact("https://h/p#frag") == "https://h/p"
    assert redact("http://h/p") == "http://h/p"
    assert redact("not a url?token") == "not a url?REDACTED"
    try:
        check_mirror("http://h/p?sig=S3CR3T with space")
    except Exception as e:
        assert "S3CR3T" not in str(e)
    else:
        raise AssertionError("a mirror with a space was accepted")


# -- 7: progress uses the announced size ---------------------------------------------------
def test_progress_total_and_eta_come_from_content_length(server: BadServer,
                                                         cas: Path) -> None:
    big = blob(2 << 20, 5)
    server.routes[f"/sha256/{cid(big)[7:]}"] = Route(big)
    store = ContentStore(cas)
    with PartialWriter(store, cid(big), None, 1 << 30) as sink:  # no --size
        stream = io.StringIO()
        p = Progress({sink.id: sink}, stream)
        p.line()
        HttpMirror(server.url, HttpOptions(read_timeout_s=5)).fetch(Want(cid(big)), sink)
        assert sink.announced_size == len(big)
        line = p.line()
    assert "2.0/2.0 MiB" in line and "ETA" in line, line


def test_progress_without_any_size_shows_no_total(cas: Path) -> None:
    store = ContentStore(cas)
    with PartialWriter(store, ID, None, 1 << 30) as sink:
        sink.write(b"\0" * 1000)
        line = Progress({sink.id: sink}, io.StringIO()).line()
    assert "ETA" not in line and "/" not in line.split("MiB/s")[0]


def test_a_dripping_tls_handshake_times_out(tmp_path: Path) -> None:
    import socket
    import threading

    hung_up = threading.Event()
    stop = threading.Event()
    srv = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            conn.recv(4096)  # the ClientHello
            hello = b"\x16\x03\x03\x40\x00" + b"\x02" * 0x4000  # a long record, dripped
            for b in hello:
                if stop.wait(0.3):
                    return
                try:
                    conn.sendall(bytes([b]))
                except OSError:
                    hung_up.set()
                    return

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        r = fetch(tmp_path / "cas", f"--mirror=https://127.0.0.1:{srv.getsockname()[1]}",
                  "--connect-timeout=1", "--read-timeout=1", "--retries=0")
        assert r.returncode == 75, r.stderr
        assert "TLS handshake did not complete" in r.stderr
        assert hung_up.wait(GUARD_S)
    finally:
        stop.set()
        srv.close()
