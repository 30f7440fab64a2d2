from concurrent.futures import ThreadPoolExecutor

import pytest

from phase_core.errors import ConfigError, Replay, Rollback
from phase_core.state import StateStore


def test_marks_persist_and_only_rise(tmp_path):
    st = StateStore(tmp_path / "state.json")
    st.commit_mark("boot/stable/x86_64", 7, "sha256:a")
    assert StateStore(tmp_path / "state.json").marks()["boot/stable/x86_64"].version == 7
    with pytest.raises(Rollback):
        st.commit_mark("boot/stable/x86_64", 5, "sha256:b")
    with pytest.raises(Rollback):
        st.commit_mark("boot/stable/x86_64", 7, "sha256:c")
    st.commit_mark("boot/stable/x86_64", 7, "sha256:a")
    st.commit_mark("boot/stable/x86_64", 9, "sha256:d")
    assert st.marks()["boot/stable/x86_64"].version == 9


def test_concurrent_commits_keep_the_highest(tmp_path):
    path = tmp_path / "state.json"

    def commit(v: int) -> None:
        try:
            StateStore(path).commit_mark("k", v, f"sha256:{v}")
        except Rollback:
            pass

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(commit, range(1, 41)))
    assert StateStore(path).marks()["k"].version == 40


def test_job_replay_and_expiry(tmp_path):
    st = StateStore(tmp_path / "s.json")
    st.record_job("sub", "sha256:j1", expires=200, now=100)
    with pytest.raises(Replay):
        StateStore(tmp_path / "s.json").record_job("sub", "sha256:j1", expires=200, now=150)
    st.record_job("other", "sha256:j1", expires=200, now=150)
    st.record_job("sub", "sha256:j2", expires=400, now=250)
    st.record_job("sub", "sha256:j1", expires=500, now=250)  # j1 expired: it may come again
    with pytest.raises(Replay, match="lifetime"):
        st.record_job("sub", "sha256:j3", expires=10**9, now=300)


def test_in_memory_store_writes_nothing(tmp_path):
    st = StateStore(None)
    st.commit_mark("k", 1, "sha256:x")
    assert st.marks()["k"].version == 1
    assert list(tmp_path.iterdir()) == []


def test_damaged_state_is_a_config_error(tmp_path):
    (tmp_path / "s.json").write_text("{garbage")
    with pytest.raises(ConfigError, match="damaged"):
        StateStore(tmp_path / "s.json").marks()


def test_journal_survives_restarts_torn_lines_and_compaction(tmp_path):
    path = tmp_path / "s.json"
    journal = tmp_path / "s.json.jobs"
    st = StateStore(path)
    for i in range(50):
        st.record_job("sub", f"sha256:{i}", expires=1000, now=100)
    with open(journal, "ab") as f:
        f.write(b'{"s":"sub","j":"sha256:to')  # a crash in the middle of an append
    again = StateStore(path)
    with pytest.raises(Replay):
        again.record_job("sub", "sha256:7", expires=1000, now=200)
    again.record_job("sub", "sha256:new", expires=2000, now=200)
    assert journal.read_bytes().endswith(b'{"s":"sub","j":"sha256:new","e":2000}\n')
    assert journal.read_bytes().count(b"\n") == 51
    # compaction keeps only what has not expired, and other instances notice
    again._compact(journal, now=1500)
    assert journal.read_bytes() == b'{"s":"sub","j":"sha256:new","e":2000}\n'
    with pytest.raises(Replay):
        st.record_job("sub", "sha256:new", expires=2500, now=1600)
    st.record_job("sub", "sha256:7", expires=2500, now=1600)


def test_journal_compacts_itself(tmp_path):
    path = tmp_path / "s.json"
    st = StateStore(path)
    for i in range(1500):
        st.record_job("sub", f"sha256:{i}", expires=100 + i, now=100 + i - 1)
    lines = (tmp_path / "s.json.jobs").read_bytes().count(b"\n")
    assert lines < 1100  # expired entries were dropped along the way
