"""Usage errors that say what was wrong: unknown option (did you mean?), unknown
command, a missing option value, and the short usage of the command at hand.

docopt only says that the arguments did not match; :func:`diagnose` looks at
the arguments again, against the options and commands the tool's docstring
names, and returns a ``UsageError`` (exit 64) for ``run_cli`` to log.
"""

from __future__ import annotations

import difflib
import re

from phase_core.errors import UsageError

# Options run_cli itself handles for every tool.
COMMON_OPTIONS = ("--log-format", "--verbose", "--quiet", "--help", "--version")
_LONG = re.compile(r"(?<![\w<-])(--[A-Za-z0-9][A-Za-z0-9_-]*)")
_SHORT = re.compile(r"(?<![\w<-])(-[A-Za-z0-9])(?![\w-])")
_WORD = re.compile(r"[a-z][a-z0-9-]*")


def usage_forms(doc: str) -> list[str]:
    """The lines of the ``Usage:`` section, without the help and version forms."""
    forms: list[str] = []
    in_usage = False
    for line in doc.splitlines():
        if line.strip().lower() == "usage:":
            in_usage = True
            continue
        if in_usage:
            if not line.strip():
                if forms:
                    break
                continue
            form = " ".join(line.split())
            if forms and form.split()[0] != forms[0].split()[0]:
                forms[-1] += " " + form  # a wrapped form goes on
                continue
            forms.append(form)
    return [f for f in forms if "--help" not in f and not f.endswith("--version")]


def options(doc: str) -> tuple[set[str], set[str]]:
    """The long and short options the docstring names (plus the common ones)."""
    longs = set(_LONG.findall(doc)) | set(COMMON_OPTIONS)
    shorts = set(_SHORT.findall(doc)) | {"-h", "-v", "-q"}
    return longs, shorts


def commands(forms: list[str]) -> list[str]:
    """The command words: the first word after the program name of each form."""
    out: list[str] = []
    for form in forms:
        words = form.split()
        if len(words) > 1 and _WORD.fullmatch(words[1]) and words[1] not in out:
            out.append(words[1])
    return out


def required_options(form: str) -> list[str]:
    """Long options a usage form needs: those outside [brackets] and (a | b) choices."""
    out: list[str] = []
    depth = 0
    for i, ch in enumerate(form):
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        elif depth == 0 and form.startswith("--", i) and (i == 0 or form[i - 1] == " "):
            m = _LONG.match(form, i)
            if m and m.group(1) not in out:
                out.append(m.group(1))
    return out


def _suggest(word: str, choices: set[str] | list[str]) -> str | None:
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return close[0] if close else None


def diagnose(tool: str, doc: str, argv: list[str], docopt_message: str) -> UsageError:
    """Why ``argv`` does not fit ``doc``, as a ``UsageError`` with a hint."""
    forms = usage_forms(doc)
    cmds = commands(forms)
    longs, shorts = options(doc)
    first = next((a for a in argv if not a.startswith("-")), None)
    cmd = first if first in cmds else None
    shown = [f for f in forms if cmd is None or f.split()[1:2] == [cmd]]
    if cmds and cmd is None:
        bare = [f for f in forms if len(f.split()) < 2 or not _WORD.fullmatch(f.split()[1])]
        usage = "".join(f"usage: {f}; " for f in bare[:1]) + f"commands: {', '.join(cmds)}"
    else:
        usage = "usage: " + " | ".join(shown[:3]) + (" | …" if len(shown) > 3 else "")
    more = f"see `{tool} {cmd + ' ' if cmd else ''}--help`"

    def error(message: str, suggestion: str | None = None, **details: str) -> UsageError:
        hint = f"did you mean {suggestion}? " if suggestion else ""
        return UsageError(message, hint=f"{hint}{usage}; {more}", **details)

    for arg in argv:
        if arg == "--":
            break
        if arg.startswith("--") and len(arg) > 2:
            name = arg.split("=", 1)[0]
            if name not in longs and not any(o.startswith(name) for o in longs):
                return error(f"unknown option {name}", _suggest(name, longs), option=name)
        elif arg.startswith("-") and len(arg) > 1 and arg[1] != "-":
            name = arg[:2]
            if name not in shorts:
                return error(f"unknown option {name}", _suggest(name, shorts), option=name)
    said = docopt_message.strip().splitlines()[0] if docopt_message.strip() else ""
    m = re.fullmatch(r"(-[-\w]+) requires argument", said)
    if m:
        return error(f"option {m.group(1)} needs a value ({m.group(1)}=VALUE)",
                     option=m.group(1))
    m = re.fullmatch(r"(-[-\w]+) must not have an argument", said)
    if m:
        return error(f"option {m.group(1)} takes no value", option=m.group(1))
    if "is not a unique prefix" in said:
        return error(said.rstrip("?"))
    if cmd is not None or not cmds:
        missing = [o for f in shown[:1] for o in required_options(f)
                   if not any(a == o or a.startswith(o + "=") for a in argv)]
        if missing:
            return error(f"{tool}{' ' + cmd if cmd else ''} needs {', '.join(missing)}",
                         option=missing[0])
    if cmds and cmd is None:
        positional = next((a for a in argv if not a.startswith("-")), None)
        if positional is None:
            return error("no command given")
        return error(f"unknown command {positional!r}", _suggest(positional, cmds),
                     command=positional)
    return error("these arguments do not match any usage form"
                 + (f" of {tool} {cmd}" if cmd else ""))
