"""The common ``plasmd submit`` command lines, parsed by hand (no docopt, no ``re``,
no ``typing``): a warm submit is over in a few tens of milliseconds, so what it
imports before it knows whether a daemon runs counts (docs/performance.md, "Cold
and local submit"). Anything this does not understand goes through docopt, which
then says what is wrong; a test keeps the two parsers' answers equal.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing itself is not imported on this path
if TYPE_CHECKING:
    from typing import Any

# the options fast_args understands; any other goes the docopt way
VALUED = frozenset({"--home", "--peer", "--stdin", "--receipt", "--manifest-out", "--env",
                    "--max-memory", "--fuel", "--timeout", "--max-output"})
FLAGS = frozenset({"--json", "--deterministic", "--ephemeral-key", "-q", "--quiet", "-v",
                   "--verbose", "-vv"})
LIMIT_OPTIONS = ("--max-memory", "--fuel", "--timeout", "--max-output")
_HEX = frozenset("0123456789abcdef")
_DIGITS = frozenset("0123456789")


def fast_args(argv: list[str]) -> dict[str, Any] | None:
    """docopt's answer for ``plasmd submit <module> [<arg>...]`` with the common
    options, or None when the line has anything else (docopt then parses it)."""
    args: dict[str, Any] = {k: None for k in VALUED}
    args.update({"--env": [], "--json": False, "--deterministic": False,
                 "--ephemeral-key": False, "--quiet": False, "--verbose": 0,
                 "--bootstrap": [], "--interface": [], "--via": "both",
                 "--discover-timeout": "5s", "<arg>": [], "<module>": None})
    for a in argv:
        if a == "--":
            return None
        if a.startswith("-") and a != "-":  # options may come anywhere, as in docopt
            name, eq, value = a.partition("=")
            if name in VALUED and eq:
                if name == "--env":
                    args["--env"].append(value)
                elif args[name] is not None:
                    return None  # given twice: let docopt say so
                else:
                    args[name] = value
            elif a in FLAGS:
                if a in ("-v", "--verbose", "-vv"):
                    args["--verbose"] += 2 if a == "-vv" else 1
                elif a in ("-q", "--quiet"):
                    args["--quiet"] = True
                else:
                    args[a] = True
            else:
                return None
        elif args["<module>"] is None:
            args["<module>"] = a
        else:
            args["<arg>"].append(a)
    if args["<module>"] is None or any(args[k] == "" for k in VALUED if k != "--env"):
        return None
    return args


def peer_form(text: str) -> bool:
    """``text`` looks like ``[<64 hex>@]<host>:<port>`` (the regular expression
    ``(?:[0-9a-f]{64}@)?[^@\\s]+:[0-9]{1,5}``, checked without ``re``); whether
    the host and port are valid is ``plasmd.submit.parse_peer``'s to say."""
    if "@" in text:
        node, _, text = text.partition("@")
        if len(node) != 64 or not _HEX.issuperset(node) or "@" in text:
            return False
    host, colon, port = text.rpartition(":")
    return (bool(colon) and bool(host) and 1 <= len(port) <= 5
            and _DIGITS.issuperset(port) and not any(c.isspace() for c in host))
