"""JSON-lines logging to stderr.

Each line: ``{"v":1,"type":"log","ts":...,"level":...,"tool":...,"event":"dotted.name",...}``.
Peer- or user-supplied strings are JSON-escaped, so they cannot forge lines;
they are also truncated. Never log a secret.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO

LEVELS = {"error": 40, "warning": 30, "info": 20, "debug": 10}
MAX_FIELD_CHARS = 512


class Logger:
    def __init__(self, tool: str = "phase", level: str = "warning",
                 stream: TextIO | None = None) -> None:
        self.tool = tool
        self.threshold = LEVELS[level]
        self._stream = stream
        self.counts: dict[str, int] = {}

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stderr

    def set_verbosity(self, verbose: int, quiet: bool = False) -> None:
        if quiet:
            self.threshold = LEVELS["error"]
        else:
            self.threshold = {0: LEVELS["warning"], 1: LEVELS["info"]}.get(verbose, LEVELS["debug"])

    def log(self, level: str, event: str, **fields: Any) -> None:
        self.counts[event] = self.counts.get(event, 0) + 1
        if LEVELS[level] < self.threshold:
            return
        rec: dict[str, Any] = {"v": 1, "type": "log",
                               "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                               "level": level, "tool": self.tool, "event": event}
        for k, v in fields.items():
            rec[k] = _clip(v)
        try:
            self.stream.write(json.dumps(rec, ensure_ascii=True, default=str) + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass  # stderr closed: logging must never take the tool down

    def debug(self, event: str, **f: Any) -> None:
        self.log("debug", event, **f)

    def info(self, event: str, **f: Any) -> None:
        self.log("info", event, **f)

    def warning(self, event: str, **f: Any) -> None:
        self.log("warning", event, **f)

    def error(self, event: str, **f: Any) -> None:
        self.log("error", event, **f)


def _clip(v: Any) -> Any:
    if isinstance(v, str) and len(v) > MAX_FIELD_CHARS:
        return v[:MAX_FIELD_CHARS] + "…"
    return v


_logger = Logger()


def get() -> Logger:
    """The process-wide logger (run_cli sets its tool name and verbosity)."""
    return _logger


def configure(tool: str, verbose: int = 0, quiet: bool = False) -> Logger:
    _logger.tool = tool
    _logger.set_verbosity(verbose, quiet)
    return _logger
