"""The hand parser of `plasm-exec run` gives exactly docopt's results, and docopt's errors.

Each argument list goes through run_cli's own steps (guest words split off, --log-format
taken out, -v folded) and then through ``parse_args`` twice: with the fast parser and
without it. The results (the dictionary, or the exit status) and the log lines must be
the same. The table also says which lists the fast parser must take itself (so it is
really used) and which it must hand to docopt.
"""

from __future__ import annotations

import io
import json

import pytest

from phase_core import log
from phase_core.cli.runner import _log_format, parse_args
from plasm_exec import __version__
from plasm_exec.cli import DOC, TOOL, split_guest_args
from plasm_exec.fastargs import parse_run

FAST = [  # the fast parser answers these itself
    ["run", "m.wasm"],
    ["run", "m.wasm", "a", "b"],
    ["run", "m.wasm", "--", "a"],
    ["run", "--", "m.wasm", "--fuel=1"],
    ["run", "m.wasm", "-v", "--help", "--receipt", "x"],  # the guest's words
    ["run", "--receipt", "r.json", "m.wasm"],
    ["run", "--receipt=r.json", "--key=k", "--home", "h", "m.wasm"],
    ["run", "--max-memory=64M", "--fuel", "5", "--timeout=2s", "--max-output", "0", "m.wasm"],
    ["run", "--env", "A=1", "--env=B=2", "--dir", "/tmp", "--dir=/a::/b:rw", "m.wasm"],
    ["run", "--deterministic", "--no-cache", "-q", "m.wasm"],
    ["run", "--quiet", "m.wasm"],
    ["run", "--guest-stderr=raw", "m.wasm", "x"],
    ["run", "-v", "m.wasm"],
    ["run", "-vv", "--verbose", "m.wasm"],
    ["-v", "run", "m.wasm"],
    ["run", "--log-format=json", "m.wasm"],
    ["run", "--log-format", "text", "-v", "m.wasm"],
    ["run", "--timeout=x", "m.wasm"],  # docopt does not check values either
    ["run", "--env=A=1", "--env=A=2", "m.wasm"],
    ["run", "--", "-"],
    ["run", "-", "x"],
]

DOCOPT = [  # handed to docopt: its results or its errors
    [],
    ["run"],
    ["run", "--"],
    ["run", "--receipt"],
    ["run", "--receipt", "r.json"],
    ["run", "--receipt=", "m.wasm"],
    ["run", "--receipt", "-x", "m.wasm"],
    ["run", "--receipt", "a", "--receipt", "b", "m.wasm"],
    ["run", "-q", "-q", "m.wasm"],
    ["run", "--deterministic", "--deterministic", "m.wasm"],
    ["run", "--det", "m.wasm"],  # an abbreviation docopt accepts
    ["run", "--rec=r.json", "m.wasm"],
    ["run", "--bogus", "m.wasm"],
    ["run", "-x", "m.wasm"],
    ["run", "-qv", "m.wasm"],
    ["run", "--keys=k.toml", "m.wasm"],  # [options] admits every option
    ["run", "--now=2026-01-01T00:00:00Z", "m.wasm"],
    ["run", "--help"],
    ["run", "-h", "m.wasm"],
    ["--version"],
    ["--help"],
    ["--receipt=r", "run", "m.wasm"],
    ["job"],
    ["job", "-q", "jobs.jsonl"],
    ["verify", "r.json"],
    ["key", "--name=w"],
    ["walk", "m.wasm"],
    ["run", "--deterministic=1", "m.wasm"],
    ["run", "--no-cache=yes", "m.wasm"],
    ["run", "--max-memory"],
]


def _parse(argv: list[str], fast: bool, capsys: pytest.CaptureFixture[str]
           ) -> tuple[object, str, list[dict[str, object]]]:
    stream = io.StringIO()
    logger = log.configure(TOOL, 0, False, "json")
    old = logger._stream
    logger._stream = stream
    try:
        rest, _fmt = _log_format(split_guest_args(list(argv)))
        got = parse_args(DOC, rest, __version__, TOOL, parse_run if fast else None)
    finally:
        logger._stream = old
    out = capsys.readouterr().out
    lines = [json.loads(ln) for ln in stream.getvalue().splitlines()]
    for rec in lines:
        rec.pop("ts", None)
    return got, out, lines


def _fast_answers(argv: list[str]) -> bool:
    from phase_core.cli.runner import _verbosity
    rest, _ = _log_format(split_guest_args(list(argv)))
    return parse_run(_verbosity(rest)[0]) is not None


@pytest.mark.parametrize("argv", FAST, ids=" ".join)
def test_fast_parser_gives_docopts_result(argv, capsys):
    assert _fast_answers(argv)
    fast = _parse(argv, True, capsys)
    slow = _parse(argv, False, capsys)
    assert isinstance(slow[0], dict)
    assert fast == slow


@pytest.mark.parametrize("argv", DOCOPT, ids=lambda a: " ".join(a) or "(none)")
def test_other_lists_go_to_docopt_with_the_same_outcome(argv, capsys):
    assert not _fast_answers(argv)
    assert _parse(argv, True, capsys) == _parse(argv, False, capsys)


def test_template_has_every_key_docopt_gives():
    from docopt import docopt
    want = dict(docopt(DOC, ["run", "--", "m.wasm"]))
    got = parse_run(["run", "--", "m.wasm"])
    assert got == want


def test_the_cli_entry_uses_it_and_keeps_docopts_errors(tmp_path, capsys):
    from plasm_exec.cli import cli
    assert cli(["run", "--bogus", "m.wasm"]) == 64
    assert cli(["run", str(tmp_path / "missing.wasm")]) == 66  # parsed by the fast parser
    err = [json.loads(ln) for ln in capsys.readouterr().err.splitlines()]
    assert [e["exit_code"] for e in err] == [64, 66]
    assert err[0]["error"] == "usage" and "--bogus" in err[0]["message"]
