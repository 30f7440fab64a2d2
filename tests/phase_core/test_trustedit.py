"""Keyring edits go through `phase-key trust` / `untrust`: idempotent, never a broken file."""

from __future__ import annotations

import subprocess

import pytest

from phase_core import keycli, trustedit
from phase_core.identity import Identity
from phase_core.trust import Keyring, format_entry
from tests.conftest import script

A = Identity(bytes(range(32))).node_id
B = Identity(bytes(range(1, 33))).node_id


def trust(run_tool, kr, name, key, *roles, replace=False):
    argv = ["trust", f"--keyring={kr}", f"--name={name}", f"--public={key}",
            *[f"--role={r}" for r in roles or ("worker",)]]
    return run_tool(keycli, argv + (["--replace"] if replace else []), tool="phase-key")


def test_trusting_twice_changes_nothing(run_tool, tmp_path):
    kr = tmp_path / "keyring.toml"
    first = trust(run_tool, kr, "w", A)
    assert first.code == 0 and first.records[0]["action"] == "added"
    before = kr.read_bytes()
    again = trust(run_tool, kr, "w", A)
    assert again.code == 0, again.err
    assert again.records[0]["changed"] is False and again.records[0]["action"] == "unchanged"
    assert kr.read_bytes() == before
    assert Keyring.load(kr).allows(A, "worker")


def test_same_name_other_key_is_a_duplicate_error_unless_replace(run_tool, tmp_path):
    kr = tmp_path / "keyring.toml"
    trust(run_tool, kr, "w", A)
    before = kr.read_bytes()
    r = trust(run_tool, kr, "w", B)
    assert r.code == 65
    log = r.logs[-1]
    assert log["error"] == "duplicate_key" and "--replace" in log["hint"]
    assert "not valid TOML" not in r.err and "already has 'w'" in log["message"]
    assert kr.read_bytes() == before  # the refused edit wrote nothing
    r = trust(run_tool, kr, "w", B, replace=True)
    assert r.code == 0 and r.records[0]["action"] == "replaced"
    ring = Keyring.load(kr)
    assert ring.allows(B, "worker") and not ring.allows(A, "worker")


def test_same_key_under_another_name_and_new_roles_need_replace(run_tool, tmp_path):
    kr = tmp_path / "keyring.toml"
    trust(run_tool, kr, "w", A)
    assert trust(run_tool, kr, "x", A).code == 65
    assert trust(run_tool, kr, "w", A, "worker", "boot-signer").code == 65
    r = trust(run_tool, kr, "x", A, "worker", "boot-signer", replace=True)
    assert r.code == 0
    ring = Keyring.load(kr)
    assert ring.name_of(A) == "x" and ring.allows(A, "boot-signer")
    assert len(ring.keys) == 1


def test_untrust_is_idempotent_and_finds_by_name_or_key(run_tool, tmp_path):
    kr = tmp_path / "keyring.toml"
    trust(run_tool, kr, "a", A)
    trust(run_tool, kr, "b", B)
    r = run_tool(keycli, ["untrust", f"--keyring={kr}", "--name=a"], tool="phase-key")
    assert r.code == 0 and r.records[0]["names"] == ["a"]
    r = run_tool(keycli, ["untrust", f"--keyring={kr}", "--name=a"], tool="phase-key")
    assert r.code == 0 and r.records[0]["changed"] is False
    r = run_tool(keycli, ["untrust", f"--keyring={kr}", f"--public={B}"], tool="phase-key")
    assert r.code == 0 and r.records[0]["names"] == ["b"]
    assert Keyring.load(kr).keys == {}


def test_leading_comments_are_kept_and_thresholds_survive(tmp_path):
    kr = tmp_path / "keyring.toml"
    kr.write_text("# trusted keys of this node\n# (edit with phase-key trust)\n\n"
                  "[thresholds]\nboot-signer = 2\n")
    trustedit.trust(kr, "w", A, ["worker"])
    text = kr.read_text()
    assert text.startswith("# trusted keys of this node\n# (edit with phase-key trust)\n")
    assert Keyring.load(kr).threshold("boot-signer") == 2


def test_a_broken_keyring_is_refused_and_left_alone(run_tool, tmp_path):
    kr = tmp_path / "keyring.toml"
    kr.write_text("[keys.w]\nkey = 'nothex'\n")
    r = trust(run_tool, kr, "v", A)
    assert r.code == 78 and str(kr) in r.logs[-1]["message"]
    assert kr.read_text() == "[keys.w]\nkey = 'nothex'\n"


def test_entries_are_written_by_a_toml_writer_not_pasted(tmp_path):
    text = format_entry("w", A, ["worker", "job-submitter"])
    ring = Keyring.parse(text.encode())
    assert ring.allows(A, "job-submitter")
    with pytest.raises(Exception, match="bad key name"):
        format_entry('x"]\n[keys.evil', A, ["worker"])


def test_readme_idiom_run_twice_keeps_every_tool_working(tmp_path):
    """The documented way to trust this node's worker key, as real processes, twice."""
    env = {"PHASE_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}
    kr = tmp_path / "keyring.toml"
    subprocess.run([script("phase-key"), "new", "-q"], env=env, check=True)
    for _ in range(2):
        p = subprocess.run([script("phase-key"), "trust", f"--keyring={kr}", "--name=worker",
                            "--role=worker", "-q"], env=env, capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
    p = subprocess.run([script("phase-verify"), f"--keys={kr}", "/dev/null"], env=env,
                       capture_output=True, text=True)
    assert p.returncode == 65  # the keyring loads; the empty input is what is wrong
    assert "bad_config" not in p.stderr
