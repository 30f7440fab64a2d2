"""A hand parser for the common ``plasm-exec run`` argument lists (no docopt).

docopt reads the whole help text on every start (about 6 ms, plus its import),
a fifth of a cold ``run``. ``parse_run`` handles the usual forms —
``run [options] -- <module.wasm> [<arg>...]`` with the long options of ``run``
spelled out in full — and returns exactly the dictionary docopt returns for
them. For anything else (another command, ``--help``, an abbreviated or unknown
option, a repeated single-valued option, a missing or dash-led value, no
module) it returns None and docopt parses as before, so every error and every
message is docopt's own. tests/plasm_exec/test_fastargs.py checks both over a
table of argument lists, good and bad.

The input is what ``run_cli`` hands to docopt: ``split_guest_args`` has put a
``--`` before the module, ``-v``/``-vv``/``--verbose`` are folded into one
leading ``-v`` and ``--log-format`` is taken out.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing's, without importing typing
if TYPE_CHECKING:
    from typing import Any


# run options whose value is a word: the value, or the list for --env / --dir
_VALUED = frozenset({"--max-memory", "--fuel", "--timeout", "--max-output", "--guest-stderr",
                     "--receipt", "--key", "--home"})
_LISTS = frozenset({"--env", "--dir"})
_FLAGS = {"--deterministic": "--deterministic", "--no-cache": "--no-cache",
          "-q": "--quiet", "--quiet": "--quiet"}

# docopt's result for `run -- <module.wasm>`: every key of the help text, defaults filled
_TEMPLATE: dict[str, Any] = {
    "run": True, "job": False, "verify": False, "key": False,
    "--role": None,
    "--max-memory": "256M", "--fuel": "10000000000", "--timeout": "30s",
    "--max-output": "16M", "--guest-stderr": "auto",
    "--deterministic": False, "--receipt": None, "--key": None, "--home": None,
    "--keys": None, "--now": None, "--name": None, "--manifest": None,
    "--no-cache": False, "--quiet": False, "--verbose": False, "--log-format": None,
    "--env": [], "--dir": [], "--": True,
    "<module.wasm>": None, "<arg>": [], "<jobs.jsonl>": None, "<receipt>": None,
    "--help": False, "--version": False,
}


def parse_run(argv: list[str]) -> dict[str, Any] | None:
    """docopt's dictionary for a plain ``run`` argument list, or None to let docopt parse."""
    i = 0
    verbose = False
    if argv[:1] == ["-v"]:
        verbose, i = True, 1
    if argv[i:i + 1] != ["run"]:
        return None
    i += 1
    out = dict(_TEMPLATE)
    out["--verbose"] = verbose
    lists: dict[str, list[str]] = {"--env": [], "--dir": []}
    seen: set[str] = set()
    n = len(argv)
    while i < n:
        a = argv[i]
        if a == "--":
            break
        name, eq, value = a.partition("=")
        if name in _VALUED or name in _LISTS:
            if not eq:
                if i + 1 >= n:
                    return None
                i += 1
                value = argv[i]
            if not value or value.startswith("-"):
                return None  # docopt's rules for these are subtle: let it decide
            if name in _LISTS:
                lists[name].append(value)
            elif name in seen:
                return None
            else:
                seen.add(name)
                out[name] = value
        elif not eq and a in _FLAGS:
            key = _FLAGS[a]
            if key in seen:
                return None
            seen.add(key)
            out[key] = True
        else:
            return None  # another option, an abbreviation, a bundle, --help...
        i += 1
    if i + 1 >= n:  # no "--" (so no module), or nothing after it
        return None
    out["--env"], out["--dir"] = lists["--env"], lists["--dir"]
    out["<module.wasm>"] = argv[i + 1]
    out["<arg>"] = argv[i + 2:]
    return out
