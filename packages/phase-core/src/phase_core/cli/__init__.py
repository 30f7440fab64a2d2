"""Shared command-line plumbing: run_cli(), JSON-lines I/O."""

from phase_core.cli.jsonl import read_records, write_record
from phase_core.cli.runner import run_cli

__all__ = ["read_records", "run_cli", "write_record"]
