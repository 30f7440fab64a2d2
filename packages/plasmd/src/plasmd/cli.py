"""The Phase node daemon (not implemented yet).

Usage:
  plasmd init [options]
  plasmd start [options]
  plasmd status [options]
  plasmd submit [options] <module>
  plasmd receipts [options]
  plasmd (-h | --help)
  plasmd --version

Options:
  -h, --help     Show this help.
  --version      Show the version.
  -q, --quiet    Print nothing on stdout; the exit status answers.
  -v, --verbose  More log lines on stderr.

Exit status:
  70  not implemented yet.
"""

from __future__ import annotations

from phase_core.cli.runner import entry as _entry
from phase_core.cli.runner import not_implemented
from plasmd import __version__

main = not_implemented("plasmd", __doc__ or "", __version__, "")


def entry() -> None:
    _entry("plasmd", __doc__ or "", __version__, main)
