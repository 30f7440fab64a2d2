"""run_cli(): the one place that turns outcomes into exit statuses.

Usage errors → 64 (an error log line naming the bad option, with a "did you
mean" and the short usage), ``PhaseError`` → its code (with an error log line),
an ``OSError`` from the file system that escaped → 74 naming the path (66 for a
missing file), Ctrl-C → 130, a broken pipe → 141, any other exception → 70
with the traceback logged. ``--log-format=json|text|auto`` (or
``PHASE_LOG_FORMAT``) chooses the log format for every tool.

A tool may pass ``fast``: a parser for its most common argument lists that
returns exactly what docopt would, or None to let docopt decide (and report
any error). What only an error or a usage message needs (traceback, the
usage diagnosis, docopt itself) is imported when it is needed, so a tool's
start-up does not pay for it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

from phase_core import exitcodes, log
from phase_core.errors import ConfigError, PhaseError, UsageError

TYPE_CHECKING = False  # typing's, without importing typing
if TYPE_CHECKING:  # the aliases are for annotations only
    from typing import Any

    Main = Callable[[dict[str, Any]], int]
    # A fast parser: the argument list (after -v folding) → docopt's result, or None
    FastParse = Callable[[list[str]], dict[str, Any] | None]


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


def _log_format(argv: list[str]) -> tuple[list[str], str | None]:
    """Take --log-format=X (or --log-format X) out of argv (before any "--")."""
    out: list[str] = []
    fmt: str | None = None
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            out += argv[i:]
            break
        if a.startswith("--log-format="):
            fmt = a.partition("=")[2]
        elif a == "--log-format":
            if i + 1 >= len(argv):
                raise UsageError("option --log-format needs a value",
                                 hint="--log-format=json, text or auto")
            fmt = argv[i + 1]
            i += 1
        else:
            out.append(a)
        i += 1
    return out, fmt


def parse_args(doc: str, argv: Sequence[str] | None, version: str,
               tool: str = "phase", fast: FastParse | None = None) -> dict[str, Any] | int:
    """docopt, with its exits turned into return codes. -vv counts as two -v.

    A usage error is logged (exit 64) with what was wrong and the short usage.
    ``fast`` is asked first; when it returns None, docopt parses.
    """
    args_in, count = _verbosity(list(sys.argv[1:] if argv is None else argv))
    if fast is not None:
        quick = fast(list(args_in))
        if quick is not None:
            if "--verbose" in quick:
                quick["--verbose"] = count
            return quick
    from docopt import DocoptExit, docopt

    try:
        parsed = dict(docopt(doc, args_in, version=version))
        if "--verbose" in parsed:
            parsed["--verbose"] = count
        return parsed
    except DocoptExit as e:
        from phase_core.cli.usage import diagnose
        err = diagnose(tool, doc, args_in, str(e.code or ""))
        log.get().error(f"{tool}.failed", **err.to_record())
        return exitcodes.USAGE
    except SystemExit as e:  # --help / --version printed their text
        return 0 if e.code in (None, 0) else exitcodes.USAGE


def run_cli(tool: str, doc: str, version: str, main: Main,
            argv: Sequence[str] | None = None, fast: FastParse | None = None) -> int:
    try:
        return _run(tool, doc, version, main, argv, fast)
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


def _setup_logging(tool: str, argv: list[str]) -> list[str] | int:
    """Choose the log format before anything is logged; argv without --log-format."""
    logger = log.configure(tool, 0, False, "json")
    try:
        rest, flag = _log_format(argv)
    except UsageError as e:
        logger.error(f"{tool}.failed", **e.to_record())
        return e.exit_code
    env = os.environ.get("PHASE_LOG_FORMAT")
    try:
        logger.format = log.resolve_format(flag, None if flag else env, logger.stream)
    except ValueError as e:
        err: PhaseError = (UsageError(f"--log-format: {e}", hint="json, text or auto")
                           if flag else ConfigError(f"PHASE_LOG_FORMAT: {e}",
                                                    hint="json, text or auto"))
        logger.error(f"{tool}.failed", **err.to_record())
        return err.exit_code
    return rest


def _run(tool: str, doc: str, version: str, main: Main, argv: Sequence[str] | None,
         fast: FastParse | None = None) -> int:
    rest = _setup_logging(tool, list(sys.argv[1:] if argv is None else argv))
    if isinstance(rest, int):
        return rest
    args = parse_args(doc, rest, version, tool, fast)
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
    except OSError as e:
        import traceback

        from phase_core.oserrors import from_oserror, is_local_fault
        if not is_local_fault(e):
            return _internal(logger, tool, e)
        err = from_oserror(e, None, "access")
        logger.debug(f"{tool}.oserror_traceback", traceback=traceback.format_exc())
        logger.error(f"{tool}.failed", **err.to_record())
        return err.exit_code
    except Exception as e:
        return _internal(logger, tool, e)


def _internal(logger: log.Logger, tool: str, e: BaseException) -> int:
    import traceback
    logger.error(f"{tool}.internal_error", error="internal",
                 message=f"internal error: {type(e).__name__}: {e} (this is a bug)",
                 traceback=traceback.format_exc(), exit_code=exitcodes.SOFTWARE)
    return exitcodes.SOFTWARE


def entry(tool: str, doc: str, version: str, main: Main) -> None:
    """Console-script entry point."""
    sys.exit(run_cli(tool, doc, version, main, sys.argv[1:]))
