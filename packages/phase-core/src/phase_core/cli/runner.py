"""run_cli(): the one place that turns outcomes into exit statuses.

Usage errors → 64, ``PhaseError`` → its code (with a JSON log line), Ctrl-C →
130, a broken pipe → 141, any other exception → 70 with the traceback logged.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from phase_core import exitcodes, log
from phase_core.errors import PhaseError

Main = Callable[[dict[str, Any]], int]


def _verbosity(argv: list[str]) -> tuple[list[str], int]:
    """Fold -v, -vv, -vvv and --verbose (before any "--") into one -v and a count."""
    out: list[str] = []
    count = 0
    for i, a in enumerate(argv):
        if a == "--":
            out += argv[i:]
            break
        if a == "--verbose" or (len(a) > 1 and a[0] == "-" and set(a[1:]) == {"v"}):
            count += 1 if a == "--verbose" else len(a) - 1
            continue
        out.append(a)
    if count:
        out.insert(0, "-v")
    return out, count


def parse_args(doc: str, argv: Sequence[str] | None, version: str) -> dict[str, Any] | int:
    """docopt, with its exits turned into return codes. -vv counts as two -v."""
    from docopt import DocoptExit, docopt

    args_in, count = _verbosity(list(sys.argv[1:] if argv is None else argv))
    try:
        parsed = dict(docopt(doc, args_in, version=version))
        if "--verbose" in parsed:
            parsed["--verbose"] = count
        return parsed
    except DocoptExit as e:
        sys.stderr.write(f"{e}\n")
        return exitcodes.USAGE
    except SystemExit as e:  # --help / --version printed their text
        return 0 if e.code in (None, 0) else exitcodes.USAGE


def run_cli(tool: str, doc: str, version: str, main: Main,
            argv: Sequence[str] | None = None) -> int:
    try:
        return _run(tool, doc, version, main, argv)
    except BrokenPipeError:
        _silence_stdout()
        return exitcodes.BROKEN_PIPE


def _silence_stdout() -> None:
    """stdout's reader went away: make the interpreter's final flush harmless."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _run(tool: str, doc: str, version: str, main: Main, argv: Sequence[str] | None) -> int:
    args = parse_args(doc, argv, version)
    if isinstance(args, int):
        return args
    raw = args.get("--verbose") or 0
    verbose = int(raw)
    logger = log.configure(tool, verbose, bool(args.get("--quiet")))
    try:
        return main(args)
    except PhaseError as e:
        logger.error(f"{tool}.failed", **e.to_record())
        return e.exit_code
    except KeyboardInterrupt:
        logger.warning(f"{tool}.interrupted")
        return exitcodes.INTERRUPTED
    except BrokenPipeError:
        raise
    except Exception as e:
        logger.error(f"{tool}.internal_error", error="internal",
                     message=f"internal error: {type(e).__name__}: {e} (this is a bug)",
                     traceback=traceback.format_exc(), exit_code=exitcodes.SOFTWARE)
        return exitcodes.SOFTWARE


def entry(tool: str, doc: str, version: str, main: Main) -> None:
    """Console-script entry point."""
    sys.exit(run_cli(tool, doc, version, main, sys.argv[1:]))
