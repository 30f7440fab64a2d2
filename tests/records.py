"""Every record a tool prints on stdout in the tests is checked against its schema.

The schema of a record of type T is docs/schemas/T.schema.json (bare signed
envelopes, whose type is the document type, match their document's schema).
The helpers that run tools in the tests (tests/conftest.py's run_tool, the
phase-fetch and plasm-exec runners, tests/pipeline's shell runs) pass what the
tool printed to ``check_stdout``, which fails the test on a line that is not a
JSON object, a type without a schema, or a record that breaks its schema.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "docs" / "schemas"
SCHEMAS: dict[str, dict[str, Any]] = {
    p.name.removesuffix(".schema.json"): json.loads(p.read_text())
    for p in sorted(SCHEMA_DIR.glob("*.schema.json"))}
REGISTRY: Registry[Any] = Registry().with_resources(
    (s["$id"], Resource.from_contents(s)) for s in SCHEMAS.values())
NOT_RECORDS = {"common", "envelope", "log"}  # definitions, and stderr's log lines
SEEN: Counter[str] = Counter()  # record types validated in this session


def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(SCHEMAS[name], registry=REGISTRY)


_VALIDATORS = {name: validator(name) for name in SCHEMAS}


def check_record(rec: Any, where: str = "stdout") -> None:
    if not isinstance(rec, dict) or not isinstance(rec.get("type"), str):
        raise AssertionError(f"{where}: a stdout record is a JSON object with a type: {rec!r:.200}")
    rtype = rec["type"]
    if rtype not in _VALIDATORS or rtype in NOT_RECORDS:
        raise AssertionError(f"{where}: record type {rtype!r} has no schema in docs/schemas/")
    errors = sorted(_VALIDATORS[rtype].iter_errors(rec), key=lambda e: list(e.path))
    if errors:
        detail = "; ".join(f"{'/'.join(map(str, e.path)) or '(record)'}: {e.message[:200]}"
                           for e in errors[:5])
        raise AssertionError(f"{where}: a {rtype} record breaks "
                             f"docs/schemas/{rtype}.schema.json: {detail}")
    SEEN[rtype] += 1


TEXT_FLAGS = {"-h", "--help", "--version"}  # these print text, not records


def check_stdout(text: str, where: str = "stdout", argv: list[str] | tuple[str, ...] = ()
                 ) -> None:
    """Validate every non-blank line of a tool's stdout (unless argv asks for help text)."""
    if TEXT_FLAGS & set(argv):
        return
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            raise AssertionError(f"{where} line {n} is not JSON: {line[:200]!r}") from None
        check_record(rec, f"{where} line {n}")
