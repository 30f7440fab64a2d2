"""The disagreement log (plasmd.disagreelog): signed, hash-chained, append-only;
every edit, reorder, removal or truncation is caught; its size is capped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from phase_core.identity import Identity
from plasmd.disagreelog import DisagreementLog, LogTampered, entry

A = ("exited", 0, "sha256:" + "a" * 64, "sha256:" + "e" * 64)
B = ("exited", 0, "sha256:" + "b" * 64, "sha256:" + "e" * 64)
LIAR, OTHER = "1" * 64, "2" * 64


def _entry(node: str = LIAR, job: int = 0) -> dict[str, object]:
    return entry(f"sha256:{job:064x}", node, "127.0.0.1:4433", "outvoted", B,
                 "sha256:" + "c" * 64, A, ["3" * 64, "4" * 64])


@pytest.fixture
def dlog(tmp_path: Path) -> DisagreementLog:
    log = DisagreementLog(tmp_path / "dispatch" / "disagreements.jsonl", Identity.generate())
    log.append([_entry(LIAR, 0), _entry(LIAR, 1)])
    log.append([_entry(OTHER, 2)])
    return log


def test_entries_verify_and_count_per_node(dlog: DisagreementLog) -> None:
    bodies = dlog.verify()
    assert [b["seq"] for b in bodies] == [0, 1, 2]
    assert bodies[0]["got"]["stdout"] == B[2] and bodies[0]["accepted"]["stdout"] == A[2]
    assert dlog.counts() == {LIAR: 2, OTHER: 1}
    assert oct(dlog.path.stat().st_mode & 0o777) == "0o600"


def test_an_empty_or_absent_log_is_fine(tmp_path: Path) -> None:
    log = DisagreementLog(tmp_path / "none.jsonl", Identity.generate())
    assert log.verify() == [] and not log.counts()


def _lines(log: DisagreementLog) -> list[str]:
    return log.path.read_text().splitlines(keepends=True)


def test_an_edited_entry_is_caught(dlog: DisagreementLog) -> None:
    lines = _lines(dlog)
    lines[1] = lines[1].replace(LIAR, OTHER)  # blame another node
    dlog.path.write_text("".join(lines))
    with pytest.raises(LogTampered, match="line 2"):
        dlog.verify()


def test_a_re_signed_entry_under_another_key_is_caught(dlog: DisagreementLog) -> None:
    other = DisagreementLog(dlog.path.with_name("x.jsonl"), Identity.generate())
    other.append([_entry(OTHER, 9)])
    lines = _lines(dlog)
    lines[0] = _lines(other)[0]
    dlog.path.write_text("".join(lines))
    with pytest.raises(LogTampered, match="not signed by this home's key"):
        dlog.verify()


def test_a_removed_entry_is_caught(dlog: DisagreementLog) -> None:
    lines = _lines(dlog)
    dlog.path.write_text(lines[0] + lines[2])
    with pytest.raises(LogTampered):
        dlog.verify()


def test_reordered_entries_are_caught(dlog: DisagreementLog) -> None:
    lines = _lines(dlog)
    dlog.path.write_text(lines[1] + lines[0] + lines[2])
    with pytest.raises(LogTampered):
        dlog.verify()


def test_a_truncated_log_is_caught_by_its_head(dlog: DisagreementLog) -> None:
    dlog.path.write_text("".join(_lines(dlog)[:2]))
    with pytest.raises(LogTampered, match="head names 2"):
        dlog.verify()


def test_a_deleted_head_or_a_cut_line_is_caught(dlog: DisagreementLog) -> None:
    text = dlog.path.read_text()
    dlog.path.write_text(text[:-10])
    with pytest.raises(LogTampered, match="cut"):
        dlog.verify()
    dlog.path.write_text(text)
    dlog.verify()
    dlog.head_path.unlink()
    with pytest.raises(LogTampered, match="head file is missing"):
        dlog.verify()


def test_the_size_cap_rotates_once_and_the_chain_continues(tmp_path: Path) -> None:
    log = DisagreementLog(tmp_path / "d.jsonl", Identity.generate(), max_bytes=2000)
    for i in range(12):
        log.append([_entry(LIAR, i)])
    assert log.old_path.exists()
    assert log.path.stat().st_size < 2000 + 2000  # one entry past the cap at most
    bodies = log.verify()
    seqs = [b["seq"] for b in bodies]
    assert seqs == list(range(seqs[0], 12))  # the oldest went with the rotated-out file
    assert log.counts()[LIAR] == len(bodies)
    for _ in range(30):
        log.append([_entry(OTHER, 99)])
    total = log.path.stat().st_size + log.old_path.stat().st_size
    assert total < 3 * 2000  # bounded: two files of about the cap


def test_the_rotated_file_must_chain_to_the_new_one(tmp_path: Path) -> None:
    log = DisagreementLog(tmp_path / "d.jsonl", Identity.generate(), max_bytes=1500)
    for i in range(6):
        log.append([_entry(LIAR, i)])
    assert log.old_path.exists()
    old = log.old_path.read_text().splitlines(keepends=True)
    log.old_path.write_text("".join(old[:-1]))  # drop the old file's last entry
    with pytest.raises(LogTampered, match="chain"):
        log.verify()


def test_lines_are_signed_envelopes_of_type_disagreement(dlog: DisagreementLog) -> None:
    obj = json.loads(_lines(dlog)[0])
    assert obj["type"] == "disagreement" and obj["v"] == 1
    assert obj["signatures"][0]["key"] == dlog.identity.node_id
    assert set(obj["body"]) >= {"seq", "prev", "at", "job", "node", "verdict", "got",
                                "accepted", "agreeing", "receipt", "address"}


def test_an_overlong_line_is_refused_without_reading_it_whole(dlog: DisagreementLog) -> None:
    with open(dlog.path, "ab") as f:
        f.write(b"x" * (1 << 20) + b"\n")
    with pytest.raises(LogTampered, match="line 4 is cut or too long"):
        dlog.verify()
