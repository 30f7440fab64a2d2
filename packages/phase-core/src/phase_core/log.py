"""Logging to stderr: JSON lines for programs, one readable line for people.

JSON (the default when stderr is not a terminal), one object per line:
``{"v":1,"type":"log","ts":...,"level":...,"tool":...,"event":"dotted.name",...}``.
Text (the default on a terminal, see :func:`resolve_format`), one line per event:
``phase-verify: error: <message> (hint: <hint>) [<event> error=<slug> exit_code=<n> k=v]``.
Peer- or user-supplied strings are escaped in both formats (JSON escapes, or
backslash escapes for control characters), so they cannot forge lines or drive
the terminal; they are also truncated. Never log a secret.
"""

from __future__ import annotations

import sys
import time

TYPE_CHECKING = False  # typing's, without importing typing
if TYPE_CHECKING:
    from typing import Any, TextIO

LEVELS = {"error": 40, "warning": 30, "info": 20, "debug": 10}
MAX_FIELD_CHARS = 512
FORMATS = ("json", "text", "auto")


class Logger:
    def __init__(self, tool: str = "phase", level: str = "warning",
                 stream: TextIO | None = None) -> None:
        self.tool = tool
        self.threshold = LEVELS[level]
        self._stream = stream
        self.format = "json"  # "json" or "text"; run_cli resolves "auto"
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
        if self.format == "text":
            line = format_text(rec)
        else:
            import json  # here: a tool that logs nothing never loads it
            line = json.dumps(rec, ensure_ascii=True, default=str)
        try:
            self.stream.write(line + "\n")
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


_SKIP = ("v", "type", "ts", "level", "tool", "event", "message", "hint", "traceback")


def format_text(rec: dict[str, Any]) -> str:
    """One log record as one human line (plus an indented traceback, if any)."""
    import json
    text = _safe(str(rec.get("message") or rec["event"]))
    if rec.get("hint"):
        text += f" (hint: {_safe(str(rec['hint']))})"
    extra = [_safe(str(rec["event"]))] if rec.get("message") else []
    for k, v in rec.items():
        if k in _SKIP:
            continue
        val = v if isinstance(v, str) else json.dumps(v, ensure_ascii=True, default=str)
        val = _safe(val)
        if not val or any(c in val for c in " =\"[]"):
            val = json.dumps(val)
        extra.append(f"{_safe(str(k))}={val}")
    line = f"{rec['tool']}: {rec['level']}: {text}"
    if extra:
        line += f" [{' '.join(extra)}]"
    tb = rec.get("traceback")
    if isinstance(tb, str) and tb:
        line += "".join(f"\n    {_safe(t)}" for t in tb.rstrip("\n").split("\n"))
    return line


def _safe(text: str) -> str:
    """Backslash-escape everything that is not printable (newlines, ESC, C1 controls)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def resolve_format(flag: str | None, env: str | None, stream: TextIO) -> str:
    """``--log-format`` > ``PHASE_LOG_FORMAT`` > auto; auto is text on a terminal.

    Raises ``ValueError`` naming the bad value (the caller turns it into an error).
    """
    choice = (flag or env or "auto").strip().lower()
    if choice not in FORMATS:
        raise ValueError(f"log format {choice!r} is not one of {', '.join(FORMATS)}")
    if choice == "auto":
        try:
            return "text" if stream.isatty() else "json"
        except (AttributeError, ValueError, OSError):
            return "json"
    return choice


def _clip(v: Any) -> Any:
    if isinstance(v, str) and len(v) > MAX_FIELD_CHARS:
        return v[:MAX_FIELD_CHARS] + "…"
    return v


_logger = Logger()


def get() -> Logger:
    """The process-wide logger (run_cli sets its tool name and verbosity)."""
    return _logger


def configure(tool: str, verbose: int = 0, quiet: bool = False,
              fmt: str | None = None) -> Logger:
    _logger.tool = tool
    _logger.set_verbosity(verbose, quiet)
    if fmt is not None:
        _logger.format = fmt
    return _logger
