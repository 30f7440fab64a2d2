"""A job's stdin reaches the guest as bytes up to ``STDIN_IN_MEMORY``, as a file beyond.

Both kinds must give the guest exactly the same bytes, and the receipt's stdin id is
the hash of what the guest was given: a store file that changed after it was checked
is refused, not run under the old id (docs/performance.md, "The guest's stdin").
"""

from __future__ import annotations

import os

import pytest

from phase_core.canonical import content_id
from phase_core.errors import DigestMismatch
from phase_core.limits import DEFAULT_LIMITS
from plasm_exec import api
from plasm_exec.api import RunSpec


def spec(**lim: int) -> RunSpec:
    limits = dict(DEFAULT_LIMITS)
    limits.update(lim)
    return RunSpec(argv=["g"], limits=limits)


@pytest.fixture
def small_cap(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(api, "STDIN_IN_MEMORY", 4096)
    return 4096


@pytest.mark.parametrize("size", [1, 4095, 4096, 4097, 70_000])
@pytest.mark.parametrize("as_file", [False, True])
def test_both_kinds_give_the_guest_the_same_bytes(executor, wasm, tmp_path, small_cap,
                                                  size, as_file):
    data = os.urandom(size)
    stdin: bytes | os.PathLike[str] = data
    if as_file:
        stdin = tmp_path / "in"
        stdin.write_bytes(data)
    res = executor.run(executor.load(wasm["cat"]), spec(), stdin=stdin)
    assert res.outcome.ended == "exited" and res.outcome.exit_code == 0
    assert res.stdout == data
    assert res.stdin_id == content_id(data)


def test_the_size_alone_decides_the_kind(executor, wasm, tmp_path, small_cap, monkeypatch):
    seen: list[bool] = []
    execute = executor.runtime.execute

    def spy(*a, stdin_bytes=None, **kw):
        seen.append(stdin_bytes is not None)
        return execute(*a, stdin_bytes=stdin_bytes, **kw)
    monkeypatch.setattr(executor.runtime, "execute", spy)
    prog = executor.load(wasm["cat"])
    for size in (small_cap, small_cap + 1):
        data = b"x" * size
        (tmp_path / "in").write_bytes(data)
        executor.run(prog, spec(), stdin=data)
        executor.run(prog, spec(), stdin=tmp_path / "in")
    assert seen == [True, True, False, False]


def test_a_store_file_changed_after_its_check_is_refused(executor, wasm, tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(b"what was checked")
    checked = content_id(b"what was checked")
    res = executor.run(executor.load(wasm["cat"]), spec(), stdin=path, stdin_id=checked)
    assert res.stdout == b"what was checked" and res.stdin_id == checked
    path.write_bytes(b"what is there now")
    with pytest.raises(DigestMismatch, match="changed on disk"):
        executor.run(executor.load(wasm["cat"]), spec(), stdin=path, stdin_id=checked)


def test_a_guest_stuck_on_bytes_stdin_meets_its_deadline(executor, wasm):
    res = executor.run(executor.load(wasm["stdin_spin"]), spec(wall_ms=300), stdin=b"abc")
    assert res.outcome.ended == "timeout"
