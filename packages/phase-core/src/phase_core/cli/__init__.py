"""Shared command-line plumbing: run_cli(), JSON-lines I/O.

The names are loaded on first use, so a tool that needs only ``run_cli`` does
not pay for the JSON-lines reader (canonical JSON) at start-up.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing's, without importing typing
if TYPE_CHECKING:
    from typing import Any

    from phase_core.cli.jsonl import read_records, write_record
    from phase_core.cli.runner import run_cli

__all__ = ["read_records", "run_cli", "write_record"]


def __getattr__(name: str) -> Any:
    if name in ("read_records", "write_record"):
        from phase_core.cli import jsonl
        return getattr(jsonl, name)
    if name == "run_cli":
        from phase_core.cli.runner import run_cli
        return run_cli
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
