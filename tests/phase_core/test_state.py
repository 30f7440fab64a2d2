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
    st.record_job("sub", "sha256:j2", expires=400, now=250)  # j1 expired and is forgotten
    assert "sha256:j1" not in st._read()["jobs"]["sub"]
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
