"""The record contract every pipeline stage follows (docs/pipeline.md).

A stage reads JSON-line records and, whatever the input is (stdin or a file):

1. skips blank lines and drops records whose type it does not act on (a debug
   log line, nothing on stdout);
2. passes upstream ``error`` records on unchanged (unless -q) and goes on; its
   final status is the worst of its own and the upstream errors' ``exit_code``;
3. exits 66 (missing input) when it found nothing to act on and nothing went
   wrong upstream: an empty input is an error, not a success.

``Stage`` keeps that bookkeeping, so each tool only decides what it acts on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

from phase_core import exitcodes, log
from phase_core.cli.jsonl import MAX_LINE_BYTES, read_records, write_record
from phase_core.errors import PhaseError

ERROR = "error"
MAX_SOURCES = 8
MAX_URL_CHARS = 2048

Item = tuple[int, dict[str, Any] | PhaseError]


def upstream_exit_code(rec: dict[str, Any]) -> int:
    """The status an upstream ``error`` record stands for: its exit_code, else 1."""
    code = rec.get("exit_code")
    if isinstance(code, int) and not isinstance(code, bool) and 1 <= code <= 255:
        return code
    return exitcodes.REJECTED


class Stage:
    """One tool's side of the contract: pass errors, drop the unknown, choose the status.

    ``out`` is stdout, or None under -q. ``acts_on(record)`` says whether the
    tool handles a record (``error`` records never reach it). ``forward``, if
    given, writes passed-on error records instead (a tool that writes its output
    from another thread keeps them in input order that way).
    """

    def __init__(self, tool: str, out: IO[str] | None,
                 acts_on: Callable[[dict[str, Any]], bool],
                 forward: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.tool = tool
        self.out = out
        self.acts_on = acts_on
        self.forward = forward
        self.status = exitcodes.OK
        self.acted = 0
        self.upstream_errors = 0
        self.dropped = 0

    # -- reading -------------------------------------------------------------------
    def read(self, src: IO[bytes], *, source: str = "stdin",
             max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[Item]:
        """Records of ``src`` the tool acts on, and the errors of unreadable lines."""
        yield from self.filter(((n, rec) for n, rec in read_records(
            src, max_line_bytes=max_line_bytes)), source=source)

    def filter(self, items: Iterable[tuple[int, dict[str, Any] | Exception]], *,
               source: str = "stdin") -> Iterator[Item]:
        """Apply the contract to already-parsed (line, record or error) items."""
        for lineno, rec in items:
            if isinstance(rec, PhaseError):
                yield lineno, rec
                continue
            if isinstance(rec, Exception):  # read_records yields only PhaseErrors
                raise rec
            if rec.get("type") == ERROR:
                self.pass_error(rec)
                continue
            if not self.acts_on(rec):
                self.drop(rec, lineno, source)
                continue
            self.acted += 1
            yield lineno, rec

    def pass_error(self, rec: dict[str, Any]) -> None:
        """An upstream error record: on to stdout unchanged; it counts in the status."""
        self.upstream_errors += 1
        code = upstream_exit_code(rec)
        self.status = exitcodes.worst(self.status, code)
        log.get().info(f"{self.tool}.upstream_error", error=str(rec.get("error"))[:64],
                       exit_code=code)
        if self.forward is not None:
            self.forward(rec)
        elif self.out is not None:
            write_record(rec, self.out)

    def drop(self, rec: dict[str, Any], lineno: int, source: str) -> None:
        self.dropped += 1
        log.get().debug(f"{self.tool}.record_dropped", source=source, line=lineno,
                        record_type=str(rec.get("type"))[:64])

    # -- status --------------------------------------------------------------------
    def note(self, code: int) -> None:
        """Fold one of the tool's own outcomes into the final status."""
        self.status = exitcodes.worst(self.status, code)

    def finish(self, what: str = "a record to act on") -> int:
        """The final status: 66 when nothing was acted on and nothing failed upstream."""
        if self.acted == 0 and self.upstream_errors == 0 and self.status == exitcodes.OK:
            hint = (f"{self.dropped} record(s) of other types were dropped; -vv names them"
                    if self.dropped else "the input was empty")
            log.get().error(f"{self.tool}.no_input", error="missing_input",
                            message=f"no {what} in the input", hint=hint,
                            exit_code=exitcodes.NOINPUT)
            return exitcodes.NOINPUT
        return self.status


def sources_of(rec: dict[str, Any]) -> list[str]:
    """The unsigned source hints a record carries: its ``sources`` list, then its
    ``provider_url``; only http(s) URLs, at most MAX_SOURCES, duplicates removed.

    They are hints: whoever fetches checks every byte against a signed content id.
    """
    found: list[Any] = []
    raw = rec.get("sources")
    if isinstance(raw, list):
        found += raw[:MAX_SOURCES]
    found.append(rec.get("provider_url"))
    out: list[str] = []
    for url in found:
        if (isinstance(url, str) and 0 < len(url) <= MAX_URL_CHARS
                and url.startswith(("http://", "https://")) and url.isprintable()
                and not any(c.isspace() for c in url) and url not in out):
            out.append(url)
    return out[:MAX_SOURCES]
