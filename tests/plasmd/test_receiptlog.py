import json

import pytest

from plasmd.receiptlog import LogTampered, ReceiptLog


def fill(path, n=5):
    log = ReceiptLog(path)
    for i in range(n):
        log.append({"v": 1, "type": "receipt", "body": {"i": i}, "signatures": []})
    return log


def test_append_and_verify(tmp_path):
    log = fill(tmp_path / "r.jsonl")
    entries = list(ReceiptLog(tmp_path / "r.jsonl").entries())
    assert [e.seq for e in entries] == [0, 1, 2, 3, 4]
    assert entries[3].receipt["body"] == {"i": 3}
    assert log.count == 5
    assert (tmp_path / "r.jsonl").stat().st_mode & 0o077 == 0


def lines(path):
    return path.read_bytes().splitlines(keepends=True)


@pytest.mark.parametrize("attack", ["truncate", "drop_middle", "swap", "edit", "append_fake"])
def test_tampering_is_detected(tmp_path, attack):
    path = tmp_path / "r.jsonl"
    fill(path)
    ls = lines(path)
    if attack == "truncate":
        ls = ls[:3]
    elif attack == "drop_middle":
        del ls[2]
    elif attack == "swap":
        ls[1], ls[2] = ls[2], ls[1]
    elif attack == "edit":
        rec = json.loads(ls[2])
        rec["receipt"]["body"]["i"] = 99
        ls[2] = json.dumps(rec, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    elif attack == "append_fake":
        rec = json.loads(ls[-1])
        rec["seq"] += 1
        ls.append(json.dumps(rec).encode() + b"\n")
    path.write_bytes(b"".join(ls))
    with pytest.raises(LogTampered):
        list(ReceiptLog(path).entries())


def test_edit_of_the_last_line_is_detected_by_the_head(tmp_path):
    path = tmp_path / "r.jsonl"
    fill(path)
    ls = lines(path)
    rec = json.loads(ls[-1])
    rec["receipt"]["body"]["i"] = 42
    ls[-1] = json.dumps(rec, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    path.write_bytes(b"".join(ls))
    with pytest.raises(LogTampered):
        list(ReceiptLog(path).entries())


def test_torn_tail_is_reported_then_repaired(tmp_path):
    path = tmp_path / "r.jsonl"
    fill(path, 3)
    with open(path, "ab") as f:
        f.write(b'{"v":1,"type":"receipt_log_en')
    with pytest.raises(LogTampered, match="torn"):
        list(ReceiptLog(path).entries())
    log = ReceiptLog(path)
    assert log.repair() > 0
    assert len(list(log.entries())) == 3
    log.append({"after": "repair"})
    assert len(list(ReceiptLog(path).entries())) == 4


def test_crash_between_line_and_head_is_adopted(tmp_path):
    path = tmp_path / "r.jsonl"
    fill(path, 3)
    head = (tmp_path / "r.jsonl.head").read_bytes()
    ReceiptLog(path).append({"late": True})
    (tmp_path / "r.jsonl.head").write_bytes(head)  # as if the head write never happened
    with pytest.raises(LogTampered):
        list(ReceiptLog(path).entries())
    log = ReceiptLog(path)
    log.repair()
    assert [e.seq for e in log.entries()] == [0, 1, 2, 3]


def asides(tmp_path):
    return sorted(tmp_path.glob("r.jsonl.aside-*"))


def test_a_torn_tail_goes_to_an_aside_file_not_away(tmp_path):
    path = tmp_path / "r.jsonl"
    fill(path, 2)
    with open(path, "ab") as f:
        f.write(b'{"v":1,"seq":2,"pr')
    assert ReceiptLog(path).repair() == 18
    assert [p.read_bytes() for p in asides(tmp_path)] == [b'{"v":1,"seq":2,"pr']


@pytest.mark.parametrize("damage, kept", [
    ("second_writer", 4),  # a second writer's entry 0 appended after entry 3
    ("edit_middle", 3),    # entry 2 edited: it still chains; entry 3 no longer does
    ("garbage", 4),
    ("edited_last", 3),    # the head's hash names the real last entry
])
def test_salvage_keeps_the_valid_prefix_and_moves_the_rest_aside(tmp_path, damage, kept):
    path = tmp_path / "r.jsonl"
    fill(path, 4)
    ls = lines(path)
    if damage == "second_writer":
        ls.append(ls[0])
    elif damage == "edit_middle":
        ls[2] = ls[2].replace(b'"i":2', b'"i":7')
    elif damage == "garbage":
        ls.append(b"\x00\x01 not json\n")
    elif damage == "edited_last":
        ls[3] = ls[3].replace(b'"i":3', b'"i":9')
    original = b"".join(ls)
    path.write_bytes(original)
    with pytest.raises(LogTampered):
        list(ReceiptLog(path).entries())
    out = ReceiptLog(path).salvage()
    assert out["kept"] == kept and out["head_was"] == 3
    (aside,) = asides(tmp_path)
    assert str(aside) == out["aside"] and out["moved_bytes"] == aside.stat().st_size
    assert path.read_bytes() + aside.read_bytes() == original  # nothing lost
    log = ReceiptLog(path)
    assert [e.seq for e in log.entries()] == list(range(kept))
    log.append({"after": "salvage"})
    assert len(list(ReceiptLog(path).entries())) == kept + 1


def test_salvage_of_an_intact_or_missing_log_changes_nothing(tmp_path):
    path = tmp_path / "r.jsonl"
    assert ReceiptLog(path).salvage() == {"kept": 0, "moved_bytes": 0, "aside": None,
                                          "head_was": -1}
    fill(path, 3)
    before = path.read_bytes()
    assert ReceiptLog(path).salvage()["aside"] is None
    assert path.read_bytes() == before and not asides(tmp_path)
    assert len(list(ReceiptLog(path).entries())) == 3


def test_salvage_also_moves_aside_entries_the_check_rejects(tmp_path):
    path = tmp_path / "r.jsonl"
    fill(path, 4)
    data = path.read_bytes().replace(b'"i":2', b'"i":7')  # as a bad signature would show
    path.write_bytes(data)
    out = ReceiptLog(path).salvage(lambda r: r["body"]["i"] != 7)
    assert out["kept"] == 2
    assert path.read_bytes() + asides(tmp_path)[0].read_bytes() == data
