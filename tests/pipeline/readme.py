"""The shell blocks of the READMEs that the pipeline tests run verbatim.

A ```sh block preceded by an HTML comment ``<!-- pipeline-test: KIND ... -->`` is
one of:

- ``setup``: run first, in order, in the test's directory;
- ``run; last record: k=v k=v``: run after the setup blocks of its file; it must
  exit 0 and its last stdout record must have those fields;
- ``boot``: a boot chain; run against a provider on 127.0.0.1 whose URL replaces
  the documented ``http://192.0.2.10:8080`` (TEST-NET, never reachable);
- ``skip: REASON``: not run, with the reason (e.g. it needs a LAN).

Every ```sh block that pipes one Phase tool into another must carry a marker, so
no documented pipeline goes untested by accident.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
READMES = [ROOT / "README.md", *sorted((ROOT / "packages").glob("*/README.md"))]
TOOLS = ("phase-discover", "phase-verify", "phase-fetch", "plasm-exec", "plasmd", "phase-key",
         "phase-boot")
DOC_PROVIDER = "http://192.0.2.10:8080"

BLOCK = re.compile(r"(?:<!--\s*pipeline-test:\s*(?P<marker>.*?)\s*-->\s*\n)?"
                   r"```sh\n(?P<code>.*?)```", re.S)
PIPE = re.compile(r"\|\s*(?:\\\n\s*)?(?:" + "|".join(TOOLS) + r")\b")


@dataclass
class Block:
    readme: Path
    line: int
    code: str
    kind: str | None  # setup, run, boot, skip, or None when unmarked
    expect: dict[str, str] = field(default_factory=dict)
    reason: str = ""

    @property
    def name(self) -> str:
        return f"{self.readme.relative_to(ROOT)}:{self.line}"

    @property
    def is_pipeline(self) -> bool:
        return PIPE.search(self.code) is not None


def blocks(readme: Path) -> list[Block]:
    text = readme.read_text()
    out = []
    for m in BLOCK.finditer(text):
        line = text.count("\n", 0, m.start("code"))
        marker = m.group("marker")
        b = Block(readme, line, m.group("code"), None)
        if marker is not None:
            kind, _, rest = marker.partition(";") if ";" in marker else marker.partition(":")
            b.kind = kind.strip()
            rest = rest.strip()
            if b.kind == "run":
                rest = rest.removeprefix("last record:").strip()
                b.expect = dict(kv.split("=", 1) for kv in rest.split())
            elif b.kind == "skip":
                b.reason = rest
            if b.kind not in ("setup", "run", "boot", "skip"):
                raise ValueError(f"{b.name}: unknown pipeline-test marker {marker!r}")
        out.append(b)
    return out


def all_blocks() -> list[Block]:
    return [b for r in READMES for b in blocks(r)]


def of_kind(kind: str) -> list[Block]:
    return [b for b in all_blocks() if b.kind == kind]


def setup_of(readme: Path) -> list[Block]:
    return [b for b in blocks(readme) if b.kind == "setup"]
