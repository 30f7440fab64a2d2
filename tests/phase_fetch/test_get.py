"""phase-fetch get: sources in order, every misbehaving mirror, exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.phase_fetch.badserver import Route
from tests.phase_fetch.conftest import FAST, blob, cid, store_is_sound

DATA = blob(300_000)
ID = cid(DATA)
HEX = ID[7:]
PATH = f"/sha256/{HEX}"


def only_good(server, cas: Path) -> None:
    """The store holds exactly the good blob, and no partial or temp file is left over."""
    assert store_is_sound(cas) == [ID]
    assert list((cas / "tmp").iterdir()) == []
    assert not (cas / "partial").exists() or list((cas / "partial").iterdir()) == []


def test_get_from_mirror_writes_blob_record(server, run, cas):
    server.routes[PATH] = Route(DATA)
    r = run("get", ID, f"--size={len(DATA)}", f"--mirror={server.url}", *FAST)
    assert r.code == 0, r.err
    [rec] = r.records
    assert rec == {"v": 1, "type": "blob", "id": ID, "size_bytes": len(DATA),
                   "path": str(cas / "sha256" / HEX[:2] / HEX[2:]), "source": server.url}
    only_good(server, cas)


def test_second_get_is_a_cache_hit_and_rehashes(server, run, cas):
    server.routes[PATH] = Route(DATA)
    assert run("get", ID, f"--mirror={server.url}", *FAST).code == 0
    r = run("get", ID, f"--mirror={server.url}", *FAST)
    assert r.code == 0 and r.records[0]["source"] == "cas"
    assert len(server.requests(PATH)) == 1
    # a blob corrupted on disk is quarantined on read and fetched again
    p = cas / "sha256" / HEX[:2] / HEX[2:]
    p.write_bytes(b"x" + DATA[1:])
    r = run("get", ID, f"--mirror={server.url}", *FAST)
    assert r.code == 0 and r.records[0]["source"] == server.url
    assert r.events("cas.corrupt_blob")
    assert len(list((cas / "quarantine").iterdir())) == 1
    assert p.read_bytes() == DATA


def test_out_places_the_blob_atomically(server, run, tmp_path):
    server.routes[PATH] = Route(DATA)
    dest = tmp_path / "kernel"
    r = run("get", ID, f"--mirror={server.url}", f"--out={dest}", *FAST)
    assert r.code == 0 and dest.read_bytes() == DATA
    assert r.records[0]["out"] == str(dest)


def test_from_dir_before_mirrors_and_bad_local_file_skipped(server, run, tmp_path, cas):
    server.routes[PATH] = Route(DATA)
    d = tmp_path / "dir"
    d.mkdir()
    (d / HEX).write_bytes(DATA[:-1] + b"?")  # same size, wrong bytes
    (d / "sha256").mkdir()
    r = run("get", ID, f"--from-dir={d}", f"--mirror={server.url}", *FAST)
    assert r.code == 0 and r.records[0]["source"] == server.url
    assert r.events("fetch.digest_mismatch")
    (cas / "sha256" / HEX[:2] / HEX[2:]).unlink()
    (d / "sha256" / HEX).write_bytes(DATA)
    r = run("get", ID, f"--from-dir={d}", f"--mirror={server.url}", *FAST)
    assert r.code == 0 and r.records[0]["source"] == f"dir:{d}"
    assert len(server.requests(PATH)) == 1


# -- one bad mirror, then a good one: the bad bytes never enter the store ------------------

BAD_MODES = [
    ("wrong", "digest_mismatch"),
    ("stall", "timeout"),
    ("stall_headers", "timeout"),
    ("reset", ("connection", "short_body")),  # a RST may surface as either
    ("short_cl", "short_body"),
    ("long_cl", "size_mismatch"),
    ("extra", "too_many_bytes"),
    ("status", "http_status"),
]


@pytest.mark.parametrize(("mode", "slug"), BAD_MODES)
def test_bad_mirror_then_good_mirror(server, run, cas, mode, slug):
    server.routes["/bad" + PATH] = Route(DATA, mode)
    server.routes["/good" + PATH] = Route(DATA)
    r = run("get", ID, f"--size={len(DATA)}", f"--mirror={server.url}/bad",
            f"--mirror={server.url}/good", *FAST)
    assert r.code == 0, r.err
    assert r.records[0]["source"] == f"{server.url}/good"
    failed = r.events("fetch.digest_mismatch") + r.events("fetch.source_failed")
    assert len(failed) == 1
    assert failed[0]["error"] in (slug if isinstance(slug, tuple) else (slug,))
    assert failed[0]["source"] == f"{server.url}/bad"
    only_good(server, cas)


@pytest.mark.parametrize(("mode", "slug", "code"), [
    ("wrong", "digest_mismatch", 1),
    ("long_cl", "digest_mismatch", 1),
    ("extra", "digest_mismatch", 1),
    ("stall", "timeout", 75),
    ("reset", "temporary_failure", 75),
    ("status", "temporary_failure", 75),
])
def test_every_mirror_bad_exit_code(server, run, cas, mode, slug, code):
    for m in ("a", "b"):
        server.routes[f"/{m}{PATH}"] = Route(DATA, mode)
    r = run("get", ID, f"--size={len(DATA)}", f"--mirror={server.url}/a",
            f"--mirror={server.url}/b", *FAST)
    assert r.code == code, r.err
    assert r.records == []
    [failed] = r.events("phase-fetch.failed")
    assert failed["error"] == slug
    assert [s["source"] for s in failed["sources"]] == [f"{server.url}/a", f"{server.url}/b"]
    assert store_is_sound(cas) == []


def test_extra_bytes_without_size_are_a_mismatch(server, run, cas):
    server.routes[PATH] = Route(DATA, "extra")
    r = run("get", ID, f"--mirror={server.url}", *FAST)
    assert r.code == 1 and store_is_sound(cas) == []


def test_no_source_has_it_is_69(server, run, cas):
    r = run("get", ID, f"--mirror={server.url}/a", f"--mirror={server.url}/b", *FAST)
    assert r.code == 69
    assert [e["error"] for e in r.events("fetch.source_failed")] == ["not_found", "not_found"]
    assert run("get", ID).code == 69  # no source at all


def test_unreachable_mirror_is_temporary(run):
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens here now
    r = run("get", ID, f"--mirror=http://127.0.0.1:{port}", *FAST)
    assert r.code == 75


def test_retries_resume_with_range(server, run, cas):
    server.routes[PATH] = Route(DATA, "flaky", fail_times=2)
    r = run("get", ID, f"--size={len(DATA)}", f"--mirror={server.url}",
            "--connect-timeout=2", "--read-timeout=1", "--retries=3", "--backoff=0")
    assert r.code == 0, r.err
    ranges = [q.range for q in server.requests(PATH)]
    assert ranges[0] is None and len(ranges) == 3
    assert all(x is not None and x.startswith("bytes=") for x in ranges[1:])
    assert int(ranges[2][6:-1]) > int(ranges[1][6:-1]) > 0
    only_good(server, cas)


def test_range_ignored_restarts_from_zero(server, run, cas):
    # leave a correct partial, then the mirror answers 200 to the Range request
    server.routes[PATH] = Route(DATA, "stall")
    assert run("get", ID, f"--size={len(DATA)}", f"--mirror={server.url}", *FAST,
               ).code == 75
    held = (cas / "partial" / HEX).stat().st_size
    assert 0 < held < len(DATA)
    server.routes[PATH] = Route(DATA, "no_range")
    r = run("get", ID, f"--size={len(DATA)}", f"--mirror={server.url}", *FAST)
    assert r.code == 0, r.err
    assert server.requests(PATH)[-1].range == f"bytes={held}-"
    assert r.events("fetch.range_ignored")
    only_good(server, cas)


def test_resumed_garbage_restarts_from_zero(server, run, cas):
    (cas / "partial").mkdir(parents=True)
    (cas / "partial" / HEX).write_bytes(b"\0" * 1000)  # a partial that is not a prefix
    server.routes[PATH] = Route(DATA)
    r = run("get", ID, f"--size={len(DATA)}", f"--mirror={server.url}", *FAST)
    assert r.code == 0, r.err
    assert [q.range for q in server.requests(PATH)] == ["bytes=1000-", None]
    assert r.events("fetch.resume_mismatch")
    only_good(server, cas)


def test_redirects_are_followed_and_bounded(server, run, cas):
    server.routes["/r" + PATH] = Route(DATA, "redirect", location=PATH)
    server.routes[PATH] = Route(DATA)
    assert run("get", ID, f"--mirror={server.url}/r", *FAST).code == 0
    loop = "/loop/sha256/" + HEX
    server.routes[loop] = Route(DATA, "redirect", location=loop)
    store_path = cas / "sha256" / HEX[:2] / HEX[2:]
    store_path.unlink()
    r = run("get", ID, f"--mirror={server.url}/loop", "--max-redirects=3", *FAST)
    assert r.code == 69
    assert r.events("fetch.source_failed")[0]["error"] == "too_many_redirects"
    assert len(server.requests(loop)) == 4


def test_mirror_template(server, run):
    server.routes[f"/files/{HEX}.bin"] = Route(DATA)
    r = run("get", ID, f"--mirror={server.url}/files/{{hex}}.bin", *FAST)
    assert r.code == 0


# -- bad input: rejected before any I/O ------------------------------------------------

@pytest.mark.parametrize("bad", [
    "sha256:" + "A" * 64, "sha256:" + "0" * 63, "md5:" + "0" * 32, "0" * 64,
    "sha256:" + "0" * 64 + "/..", "../etc/passwd",
])
def test_bad_content_id_rejected_before_io(server, run, cas, bad):
    server.routes[PATH] = Route(DATA)
    r = run("get", bad, f"--mirror={server.url}")
    assert r.code == 65
    assert server.log == [] and not cas.exists()


@pytest.mark.parametrize("bad", ["ftp://x/", "file:///etc/passwd", "http://", "not a url"])
def test_bad_mirror_rejected_before_io(run, cas, bad):
    assert run("get", ID, f"--mirror={bad}").code == 65
    assert not cas.exists()


def test_bad_size_and_options(run, cas):
    assert run("get", ID, "--size=-1").code == 65
    assert run("get", ID, "--size=x").code == 65
    assert run("get", ID, "--jobs=0").code == 64
    assert run("get", ID, "--read-timeout=nan").code == 64
    assert not cas.exists()
