"""Write a man page (roff) from a tool's --help text.

Usage: manpage.py TOOL VERSION DATE < help.txt > TOOL.1

The help texts are docopt documents: a one-line summary, a description, then
sections headed ``Usage:``, ``Commands:``, ``Options:``, ``Exit status:`` ... Each
section becomes an .SH section; its body is kept as written (no filling), so the
page says exactly what ``TOOL --help`` says.
"""

from __future__ import annotations

import re
import sys

HEADING = re.compile(r"^([A-Z][A-Za-z ]{1,30}):\s*$")
MAX_HELP = 1 << 20


def esc(line: str) -> str:
    line = line.replace("\\", "\\e").replace("-", "\\-")
    if line.startswith((".", "'")):
        line = "\\&" + line
    return line


def render(tool: str, version: str, date: str, text: str) -> str:
    lines = text[:MAX_HELP].rstrip().splitlines()
    summary = lines[0].strip().rstrip(".") if lines else tool
    out = [f'.TH {tool.upper()} 1 "{date}" "{tool} {version}" "Phase"',
           ".SH NAME", f"{esc(tool)} \\- {esc(summary[0].lower() + summary[1:])}"]
    section = "DESCRIPTION"
    body: list[str] = []
    sections: list[list[str]] = []

    def flush() -> None:
        while body and not body[-1].strip():
            body.pop()
        while body and not body[0].strip():
            body.pop(0)
        if body:
            sections.append([f".SH {section}", ".nf",
                             *(esc(b) if b.strip() else "" for b in body), ".fi"])
        body.clear()

    for line in lines[1:]:
        m = HEADING.match(line)
        if m:
            flush()
            name = m.group(1).upper()
            section = "SYNOPSIS" if name == "USAGE" else name
            if " " in section:
                section = f'"{section}"'
            continue
        body.append(line)
    flush()
    sections.sort(key=lambda sec: sec[0] != ".SH SYNOPSIS")  # SYNOPSIS first, else as written
    for sec in sections:
        out.extend(sec)
    out.extend([".SH SEE ALSO", "/usr/share/doc/phase\\-tools/README.md"])
    return "\n".join(out) + "\n"


def main() -> int:
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 64
    sys.stdout.write(render(sys.argv[1], sys.argv[2], sys.argv[3], sys.stdin.read()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
