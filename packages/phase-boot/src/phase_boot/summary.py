"""The console's one line: what was loaded, or why nothing was.

The deciding error comes last; up to three distinct errors before it follow in
brackets (a stage that drops a bad manifest and then says "nothing found" is
explained by the earlier line). Errors come from the JSON logs of earlier
stages (``--log``), upstream ``error`` records and phase-boot's own checks.
Only printable characters are written, so a peer's string cannot move the
console's cursor.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from phase_boot.records import Problem, upstream_code
from phase_core.fsutil import write_atomic

MAX_LOG_TAIL = 256 << 10
MAX_EARLIER = 3
MAX_LINE_CHARS = 1000


def log_problems(path: Path) -> list[Problem]:
    """The error lines of a tool's JSON log (its last 256 KiB); unreadable -> none."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(max(0, size - MAX_LOG_TAIL))
            data = f.read(MAX_LOG_TAIL)
    except OSError:
        return []
    out = []
    for line in data.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and rec.get("error"):
            out.append(Problem(str(rec["error"])[:64], str(rec.get("message") or "")[:200],
                               upstream_code(rec.get("exit_code"))))
    return out


def deciding(problems: list[Problem], status: int) -> int:
    """Index of the error that decided ``status``: the last one with that code."""
    for i in range(len(problems) - 1, -1, -1):
        if problems[i].exit_code == status:
            return i
    return len(problems) - 1


def explain(problems: list[Problem], status: int) -> str:
    if not problems:
        return "unknown (no tool reported an error)"
    i = deciding(problems, status)
    last = problems[i]
    others: list[str] = []
    for p in problems[:i] + problems[i + 1:]:
        text = _text(p)
        if text != _text(last) and text not in others:
            others.append(text)
    line = _text(last)
    if others:
        line += " [before that: " + "; ".join(others[-MAX_EARLIER:]) + "]"
    return printable(line)[:MAX_LINE_CHARS]


def _text(p: Problem) -> str:
    return f"{p.slug}: {p.message}".rstrip(": ")


def printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)


def write(path: Path | None, line: str) -> None:
    if path is not None:
        write_atomic(path, (printable(line) + "\n").encode(), mode=0o644)


def problems_from(logs: Iterable[Path], upstream: list[Problem],
                  own: list[Problem]) -> list[Problem]:
    out: list[Problem] = []
    for p in logs:
        out += log_problems(p)
    return out + upstream + own
