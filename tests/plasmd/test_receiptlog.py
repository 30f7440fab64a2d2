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
