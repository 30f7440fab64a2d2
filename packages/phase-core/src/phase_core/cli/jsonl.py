"""JSON lines on stdin and stdout.

Writers: one object per line, ASCII-safe, flushed after each record, with
``"v"`` and ``"type"``. Readers: skip blank lines, cap each line, parse under
the canonical input rules (no floats, no duplicate keys), tolerate unknown keys.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import IO, Any

from phase_core.canonical import parse
from phase_core.errors import Malformed, TooLarge

MAX_LINE_BYTES = 4 << 20


def write_record(record: dict[str, Any], out: IO[str] | None = None) -> None:
    if "v" not in record or "type" not in record:
        raise ValueError("every record has v and type")
    stream = out if out is not None else sys.stdout
    stream.write(json.dumps(record, ensure_ascii=True, separators=(",", ":")) + "\n")
    stream.flush()


def read_records(src: IO[bytes], *, max_line_bytes: int = MAX_LINE_BYTES
                 ) -> Iterator[tuple[int, dict[str, Any] | Exception]]:
    """Yield (line number, record or the error that line caused).

    A line that is too long, not JSON or not an object yields an error instead
    of a record, so a caller can choose to keep going.
    """
    lineno = 0
    while True:
        line = src.readline(max_line_bytes + 1)
        if not line:
            return
        lineno += 1
        if len(line) > max_line_bytes and not line.endswith(b"\n"):
            # skip the rest of the over-long line
            while True:
                more = src.readline(max_line_bytes)
                if not more or more.endswith(b"\n"):
                    break
            yield lineno, TooLarge(f"line {lineno} is longer than {max_line_bytes} bytes")
            continue
        if not line.strip():
            continue
        try:
            value = parse(line, max_bytes=max_line_bytes + 1)
        except (Malformed, TooLarge) as e:
            e.message = f"line {lineno}: {e.message}"
            yield lineno, e
            continue
        if not isinstance(value, dict):
            yield lineno, Malformed(f"line {lineno}: a record must be a JSON object")
            continue
        yield lineno, value
