"""Usage errors and log formats, the same for every tool (run_cli), as real processes."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
from pathlib import Path

import pytest

from phase_core import log
from phase_core.cli import usage
from tests.conftest import script


def run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    e = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **(env or {})}
    return subprocess.run([script(argv[0]), *argv[1:]], capture_output=True, text=True, env=e,
                          timeout=60)


def only_record(p: subprocess.CompletedProcess[str]) -> dict[str, object]:
    """stderr is exactly one JSON error record: no docopt internals, no usage dump."""
    lines = p.stderr.splitlines()
    assert len(lines) == 1, p.stderr
    rec = json.loads(lines[0])
    assert rec["type"] == "log" and rec["level"] == "error"
    assert "Option(" not in p.stderr and "Warning" not in p.stderr
    return rec


@pytest.mark.parametrize(("argv", "message", "suggestion"), [
    (["phase-verify", "--kyes", "k", "job.json"], "unknown option --kyes", "--keys"),
    (["phase-fetch", "get", "--mirorr=http://127.0.0.1:1", "sha256:" + "0" * 64],
     "unknown option --mirorr", "--mirror"),
    (["phase-discover", "boot", "--timeuot=1"], "unknown option --timeuot", "--timeout"),
    (["plasm-exec", "run", "--max-memroy=1M", "x.wasm"], "unknown option --max-memroy",
     "--max-memory"),
    (["plasmd", "strat"], "unknown command 'strat'", "start"),
    (["phase-key", "sgin"], "unknown command 'sgin'", "sign"),
])
def test_misspelt_options_and_commands_get_a_did_you_mean(argv, message, suggestion):
    p = run(*argv)
    assert p.returncode == 64
    rec = only_record(p)
    assert rec["error"] == "usage" and rec["exit_code"] == 64
    assert rec["message"] == message
    assert f"did you mean {suggestion}?" in str(rec["hint"])
    assert f"{argv[0]}" in str(rec["hint"]) and "--help" in str(rec["hint"])


def test_other_usage_errors_say_what_is_wrong():
    rec = only_record(run("phase-verify", "--keys"))
    assert rec["message"] == "option --keys needs a value (--keys=VALUE)"
    assert "usage: phase-verify [options] [<file>...]" in str(rec["hint"])
    rec = only_record(run("plasm-exec", "run"))
    assert "plasm-exec run" in str(rec["message"]) and "<module.wasm>" in str(rec["hint"])
    rec = only_record(run("phase-discover", "boot", "--arch=x86_64"))
    assert rec["message"] == "phase-discover boot needs --channel"
    rec = only_record(run("phase-key"))
    assert rec["message"] == "no command given" and "commands: new, show" in str(rec["hint"])


@pytest.mark.parametrize("argv", [
    ["plasmd", "start", "--listen=nohostport"],
    ["plasmd", "submit", "x.wasm", "--peer=nohostport"],
    ["plasmd", "submit", "x.wasm", "--peer=zz@127.0.0.1:1"],
    ["phase-verify", "--log-format=loud"],
])
def test_bad_option_values_are_usage_errors_not_config(argv):
    p = run(*argv)
    assert p.returncode == 64, p.stderr
    assert only_record(p)["error"] == "usage"


def test_submit_without_a_home_points_at_plasmd_init(tmp_path):
    p = run("plasmd", "submit", f"--home={tmp_path / 'nosuch'}", "x.wasm")
    assert p.returncode == 66
    hint = str(only_record(p)["hint"])
    assert "plasmd init" in hint and "phase-key new" not in hint


def test_bad_phase_log_format_is_bad_config():
    p = run("phase-verify", env={"PHASE_LOG_FORMAT": "loud"})
    assert p.returncode == 78 and "PHASE_LOG_FORMAT" in str(only_record(p)["message"])


def _on_pty(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run with stderr on a pseudo-terminal (stdout a pipe); return status and stderr text."""
    master, slave = pty.openpty()
    e = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}
    p = subprocess.Popen([script(argv[0]), *argv[1:]], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=slave, env=e)
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            break
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    p.stdout.read() if p.stdout else None
    return p.wait(timeout=60), b"".join(chunks).decode().replace("\r\n", "\n")


def test_a_terminal_gets_one_readable_line(tmp_path):
    hostile = str(tmp_path / "x\x1b[2J\nphase-verify: error: forged")
    code, err = _on_pty(["phase-verify", hostile], {})
    assert code == 66
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1, err
    assert lines[0].startswith("phase-verify: error: ")
    assert "\x1b" not in err and "\\x1b" in lines[0] and "\\n" in lines[0]
    assert "[" in lines[0] and "error=missing_input" in lines[0] and "exit_code=66" in lines[0]


def test_log_format_flag_and_environment_override_auto(tmp_path):
    code, err = _on_pty(["phase-verify", "--log-format=json", str(tmp_path / "nope")], {})
    assert code == 66 and json.loads(err.strip())["error"] == "missing_input"
    code, err = _on_pty(["phase-verify", str(tmp_path / "nope")], {"PHASE_LOG_FORMAT": "json"})
    assert json.loads(err.strip())["exit_code"] == 66
    p = run("phase-verify", "--log-format=text", str(tmp_path / "nope"))
    assert p.returncode == 66 and p.stderr.startswith("phase-verify: error: ")
    p = run("phase-verify", str(tmp_path / "nope"))  # a pipe: JSON, as before
    assert json.loads(p.stderr)["error"] == "missing_input"


def test_text_usage_error_on_a_terminal():
    code, err = _on_pty(["phase-verify", "--kyes", "k"], {})
    assert code == 64
    assert err.startswith("phase-verify: error: unknown option --kyes (hint: did you mean --keys?")


def test_format_text_escapes_and_keeps_one_line():
    rec = {"v": 1, "type": "log", "ts": "t", "level": "warning", "tool": "t", "event": "e.x",
           "message": "a\nb", "peer": "evil\x1b]0;x\x07", "n": 3, "ok": True, "list": [1]}
    line = log.format_text(rec)
    assert "\n" not in line and "\x1b" not in line and "\x07" not in line
    assert line.startswith("t: warning: a\\nb [e.x ") and "n=3" in line and "ok=true" in line


def test_usage_forms_join_wrapped_lines():
    doc = ("Usage:\n  tool a [--x=X]\n         [--y=Y]\n  tool b\n  tool (-h | --help)\n\n"
           "Options:\n  --x=X  X.\n")
    assert usage.usage_forms(doc) == ["tool a [--x=X] [--y=Y]", "tool b"]
    assert usage.commands(usage.usage_forms(doc)) == ["a", "b"]
    err = usage.diagnose("tool", doc, ["a", "--z"], "")
    assert err.exit_code == 64 and err.message == "unknown option --z"


def test_docs_list_the_log_formats():
    conv = (Path(__file__).resolve().parents[2] / "docs" / "conventions.md").read_text()
    assert "--log-format" in conv and "PHASE_LOG_FORMAT" in conv
