import io
import os

import pytest

from phase_core.canonical import content_id
from phase_core.cas import ContentStore
from phase_core.errors import DigestMismatch, MissingInput, TooLarge


def test_put_get_has_list_delete_size(tmp_path):
    cas = ContentStore(tmp_path)
    a = cas.put_bytes(b"alpha")
    b = cas.put_stream(io.BytesIO(b"beta" * 100_000))
    assert a == content_id(b"alpha")
    assert cas.has(a) and cas.read(a) == b"alpha"
    assert dict(cas.list()) == {a: 5, b: 400_000}
    assert cas.size() == 400_005
    assert cas.delete(a) and not cas.has(a) and not cas.delete(a)
    with pytest.raises(MissingInput):
        cas.read(a)


def test_expected_digest_and_size_cap(tmp_path):
    cas = ContentStore(tmp_path)
    with pytest.raises(DigestMismatch):
        cas.put_bytes(b"evil", expected=content_id(b"good"))
    assert list(cas.list()) == []
    with pytest.raises(TooLarge):
        cas.put_stream(io.BytesIO(b"x" * 1000), max_bytes=999)
    assert list(cas.list()) == [] and list((tmp_path / "tmp").iterdir()) == []


def test_corrupt_blob_is_quarantined_and_never_returned(tmp_path):
    cas = ContentStore(tmp_path)
    cid = cas.put_bytes(b"important bytes")
    path = cas.path_for(cid)
    data = bytearray(path.read_bytes())
    data[3] ^= 0x20
    path.write_bytes(bytes(data))
    with pytest.raises(DigestMismatch) as e:
        cas.read(cid)
    assert e.value.slug == "corrupt_blob"
    assert not cas.has(cid)
    assert len(list((tmp_path / "quarantine").iterdir())) == 1
    cid2 = cas.put_bytes(b"other bytes")
    p2 = cas.path_for(cid2)
    p2.write_bytes(b"changed")
    with pytest.raises(DigestMismatch):
        cas.verify(cid2)
    cid3 = cas.put_bytes(b"third")
    cas.path_for(cid3).write_bytes(b"thirx")
    with pytest.raises(DigestMismatch):
        cas.export(cid3, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_export_is_atomic_copy(tmp_path):
    cas = ContentStore(tmp_path / "cas")
    cid = cas.put_bytes(b"payload")
    out = cas.export(cid, tmp_path / "payload.bin")
    assert out.read_bytes() == b"payload"


def test_gc_evicts_least_recently_used(tmp_path):
    cas = ContentStore(tmp_path)
    ids = [cas.put_bytes(bytes([i]) * 100) for i in range(5)]
    for i, cid in enumerate(ids):
        os.utime(cas.path_for(cid), (1000 + i, 1000 + i))
    cas.verify(ids[0])  # touching makes it the most recently used
    removed = cas.gc(300)
    assert removed == ids[1:3]
    assert cas.size() == 300


def test_writer_abort_leaves_nothing(tmp_path):
    cas = ContentStore(tmp_path)
    with pytest.raises(RuntimeError), cas.writer() as w:
        w.write(b"partial")
        raise RuntimeError("killed")
    assert list((tmp_path / "tmp").iterdir()) == []
    assert list(cas.list()) == []


def test_put_of_a_present_blob_does_not_rewrite_it(tmp_path, monkeypatch):
    cas = ContentStore(tmp_path)
    cid = cas.put_bytes(b"same")
    calls = []
    monkeypatch.setattr(cas, "writer", lambda *a, **k: calls.append(1))
    assert cas.put_bytes(b"same") == cid and calls == []
    with pytest.raises(DigestMismatch):
        cas.put_bytes(b"same", expected=content_id(b"other"))
