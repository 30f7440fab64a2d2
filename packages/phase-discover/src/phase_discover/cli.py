"""Find Phase nodes and boot manifests (not implemented yet).

Usage:
  phase-discover nodes [options]
  phase-discover boot [options]
  phase-discover (-h | --help)
  phase-discover --version

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
from phase_discover import __version__

main = not_implemented("phase-discover", __doc__ or "", __version__, "")


def entry() -> None:
    _entry("phase-discover", __doc__ or "", __version__, main)
