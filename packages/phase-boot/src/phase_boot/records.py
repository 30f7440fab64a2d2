"""phase-boot's input: the boot pipeline's records, read once with caps.

Kept: ``verified`` records of doc_type ``boot_manifest`` (their signed
``envelope`` is what counts; everything else in the record is a claim),
``blob`` records (content id → the file: its ``out`` copy, else its ``path`` in
the store), and
``error`` records from upstream, which are also passed on to stdout as they
arrive. Every other record type is dropped with a debug log line. The reader
side of the record contract is ``phase_core.cli.pipeline.Stage``, as in every tool.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import IO, Any

from phase_core import boot, log
from phase_core.canonical import is_content_id
from phase_core.cli.jsonl import write_record
from phase_core.cli.pipeline import Stage, upstream_exit_code
from phase_core.errors import Malformed, PhaseError, TooLarge

MAX_CANDIDATES = 64
MAX_BLOBS = 1024
MAX_KEPT_ERRORS = 256  # for the summary; every upstream error is still passed on
MAX_PATH_CHARS = 4096


@dataclass(frozen=True)
class Problem:
    """An error that may decide the exit status: from upstream, a log, or our own."""

    slug: str
    message: str
    exit_code: int

    @classmethod
    def of(cls, e: PhaseError) -> Problem:
        return cls(e.slug, e.message, e.exit_code)


@dataclass
class Candidate:
    line: int
    envelope: dict[str, Any]


@dataclass
class Input:
    candidates: list[Candidate] = field(default_factory=list)
    blobs: dict[str, str] = field(default_factory=dict)  # content id -> path
    upstream: list[Problem] = field(default_factory=list)
    own: list[Problem] = field(default_factory=list)
    records: int = 0


def upstream_code(value: object) -> int:
    """An upstream error's exit_code: 1 unless it is an int in 1..255."""
    return upstream_exit_code({"exit_code": value})


def _acts_on(rec: dict[str, Any]) -> bool:
    rtype = rec.get("type")
    return rtype == "blob" or (rtype == "verified" and rec.get("doc_type") == boot.TYPE)


def read(src: IO[bytes], out: IO[str] | None) -> Input:
    """The contract's reader side (``phase_core.cli.pipeline.Stage``), keeping what counts."""
    inp = Input()

    def forward(rec: dict[str, Any]) -> None:  # an upstream error: passed on, and kept
        if out is not None:
            write_record(rec, out)
        if len(inp.upstream) < MAX_KEPT_ERRORS:
            inp.upstream.append(Problem(str(rec.get("error") or "error")[:64],
                                        str(rec.get("message") or "")[:400],
                                        upstream_exit_code(rec)))

    stage = Stage("phase-boot", out, _acts_on, forward)
    for lineno, rec in stage.read(src):
        if isinstance(rec, PhaseError):
            own(inp, rec, out, "boot.bad_record")
            continue
        try:
            _take(inp, lineno, rec)
        except PhaseError as e:
            if not e.message.startswith("line "):
                e.message = f"line {lineno}: {e.message}"
            own(inp, e, out, "boot.bad_record")
    inp.records = stage.acted + stage.dropped + stage.upstream_errors
    return inp


def own(inp: Input, e: PhaseError, out: IO[str] | None, event: str) -> None:
    """One of phase-boot's own errors: logged, an ``error`` record, kept for the status."""
    log.get().error(event, **e.to_record())
    if out is not None:
        write_record({"v": 1, "type": "error", **e.to_record()}, out)
    if len(inp.own) < MAX_KEPT_ERRORS:
        inp.own.append(Problem.of(e))


def _take(inp: Input, line: int, rec: dict[str, Any]) -> None:
    if rec.get("type") == "blob":
        cid, path = rec.get("id"), rec.get("out") or rec.get("path")
        if not is_content_id(cid):
            raise Malformed(f"a blob record with a bad content id {str(cid)[:80]!r}")
        if path is None:
            return  # no file to hand to the kernel
        if not isinstance(path, str) or not path or len(path) > MAX_PATH_CHARS \
                or "\0" in path:
            raise Malformed(f"blob {cid} has a bad path", hint="pass phase-fetch's output")
        if cid not in inp.blobs and len(inp.blobs) >= MAX_BLOBS:
            raise TooLarge(f"more than {MAX_BLOBS} blob records")
        assert isinstance(cid, str)
        inp.blobs[cid] = path
        return
    env = rec.get("envelope")  # a verified boot_manifest record
    if not isinstance(env, dict):
        raise Malformed("a verified boot_manifest record without its envelope",
                        hint="phase-boot verifies the signed document again; pass the "
                             "records phase-verify and phase-fetch wrote, unmodified")
    if len(inp.candidates) >= MAX_CANDIDATES:
        raise TooLarge(f"more than {MAX_CANDIDATES} boot manifests in the input")
    inp.candidates.append(Candidate(line, env))
