"""phase-verify's logic: read documents, verify each, write records."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from phase_core import documents, log, timefmt
from phase_core.canonical import parse
from phase_core.cli.jsonl import read_records, write_record
from phase_core.cli.pipeline import Stage, sources_of
from phase_core.envelope import DOC_TYPES
from phase_core.errors import (
    IOFailure,
    Malformed,
    MissingInput,
    PhaseError,
    TooLarge,
    Unavailable,
    UsageError,
)
from phase_core.state import StateStore
from phase_core.trust import ROLES, Keyring

Item = tuple[str, dict[str, Any] | PhaseError]


def run(args: dict[str, Any]) -> int:
    opts = _options(args)
    logger = log.get()
    quiet = bool(args["--quiet"])
    keep_going = bool(args["--keep-going"])
    store = StateStore(Path(args["--state"])) if args["--state"] else None
    stage = Stage("verify", None if quiet else sys.stdout, _carries_document)
    for source, item in _documents(stage, args["<file>"] or ["-"], opts["max_bytes"]):
        try:
            if isinstance(item, PhaseError):
                raise item
            doc = _unwrap(item)
            marks = store.marks() if store is not None else {}
            policy = documents.Policy(opts["keyring"], opts["now"], role=opts["role"],
                                      threshold=opts["threshold"],
                                      expected_type=opts["type"], marks=marks)
            verified = documents.verify(doc, policy)
            reexecuted = None
            if args["--reexec"] and verified.type == "receipt":
                reexecuted = _reexec(verified, source, args, opts)
            key = verified.rollback_key
            if store is not None and key is not None:
                store.commit_mark(key, int(verified.body["version"]), verified.id)
            logger.info("verify.ok", source=source, doc_type=verified.type, id=verified.id,
                        signers=[t.name for t in verified.signers])
            if not quiet:
                write_record(verified_record(verified, item, source, reexecuted))
        except PhaseError as e:
            logger.error("verify.rejected", source=source, **e.to_record())
            stage.note(e.exit_code)
            if not quiet:
                write_record({"v": 1, "type": "error", "source": source, **e.to_record()})
            if not keep_going:
                return stage.status
    return stage.finish("signed document")


def verified_record(verified: documents.Verified, carrier: dict[str, Any], source: str,
                    reexecuted: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``verified`` record; the carrier record's unsigned source hints travel on."""
    rec = verified.record()
    rec["source"] = source
    hints = sources_of(carrier)
    if hints:
        rec["sources"] = hints
    if reexecuted is not None:
        rec["reexecuted"] = reexecuted
    return rec


def _options(args: dict[str, Any]) -> dict[str, Any]:
    keyring = Keyring.load(Path(args["--keys"])) if args["--keys"] else Keyring()
    now = timefmt.parse_time(args["--now"], "--now") if args["--now"] else timefmt.now()
    role = args["--role"]
    if role is not None and role not in ROLES:
        raise UsageError(f"--role must be one of {', '.join(ROLES)}")
    doc_type = args["--type"]
    if doc_type is not None and doc_type not in DOC_TYPES:
        raise UsageError(f"--type must be one of {', '.join(DOC_TYPES)}")
    threshold = None
    if args["--threshold"] is not None:
        threshold = _int(args["--threshold"], "--threshold", 1, 16)
    return {"keyring": keyring, "now": now, "role": role, "type": doc_type,
            "threshold": threshold,
            "max_bytes": _int(args["--max-bytes"], "--max-bytes", 1, 64 << 20)}


def _int(text: str, name: str, lo: int, hi: int) -> int:
    try:
        n = int(text)
    except ValueError:
        raise UsageError(f"{name} must be an integer") from None
    if not lo <= n <= hi:
        raise UsageError(f"{name} must be between {lo} and {hi}")
    return n


def _is_envelope(record: dict[str, Any]) -> bool:
    return "signatures" in record or "body" in record or record.get("type") in DOC_TYPES


def _carries_document(record: dict[str, Any]) -> bool:
    """A record of any type with an envelope under "envelope", or a bare envelope."""
    return isinstance(record.get("envelope"), dict) or _is_envelope(record)


def _unwrap(record: dict[str, Any]) -> dict[str, Any]:
    """The envelope a record carries (the record itself when it is one)."""
    env = record.get("envelope")
    if isinstance(env, dict):  # a verified record has a body too: its envelope is the proof
        return env
    return record


def _documents(stage: Stage, files: list[str], max_bytes: int) -> Iterator[Item]:
    """(source, record or error) for every record the stage acts on, file or stdin alike."""
    for name in files:
        if name == "-":
            for lineno, rec in stage.read(sys.stdin.buffer, max_line_bytes=max_bytes):
                yield f"stdin:{lineno}", rec
            continue
        for label, rec in _file_documents(Path(name), max_bytes):
            for _, kept in stage.filter([(0, rec)], source=label):
                yield label, kept


def _file_documents(path: Path, max_bytes: int) -> Iterator[Item]:
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        yield str(path), MissingInput(f"no such file: {path}")
        return
    except OSError as e:
        yield str(path), IOFailure(f"cannot read {path}: {e.strerror}")
        return
    with f:
        head = f.read(max_bytes + 1)
        if len(head) <= max_bytes:
            try:
                value = parse(head, max_bytes=max_bytes)
            except PhaseError as whole:
                lines = [ln for ln in head.splitlines() if ln.strip()]
                if len(lines) > 1 and all(ln.lstrip().startswith(b"{") for ln in lines):
                    import io
                    for lineno, rec in read_records(io.BytesIO(head), max_line_bytes=max_bytes):
                        yield f"{path}:{lineno}", rec
                    return
                yield str(path), whole
                return
            if not isinstance(value, dict):
                yield str(path), Malformed("a signed document must be a JSON object")
                return
            yield str(path), value
            return
        # larger than one document can be: JSON lines, or too large
        f.seek(0)
        first = f.readline(max_bytes + 1)
        try:
            is_jsonl = isinstance(parse(first, max_bytes=max_bytes), dict)
        except PhaseError:
            is_jsonl = False
        if not is_jsonl:
            size = path.stat().st_size
            yield str(path), TooLarge(f"{path} is {size} bytes, over the cap of {max_bytes}",
                                      hint="raise --max-bytes if this document is genuine")
            return
        f.seek(0)
        for lineno, rec in read_records(f, max_line_bytes=max_bytes):  # type: ignore[arg-type]
            yield f"{path}:{lineno}", rec


def _reexec(verified: documents.Verified, source: str, args: dict[str, Any],
            opts: dict[str, Any]) -> dict[str, Any]:
    """Re-run the receipt's job with plasm-exec; return what was checked or raise."""
    try:
        from plasm_exec import receipts, reexec
    except ImportError:
        raise Unavailable("--reexec needs plasm-exec, which is not installed",
                          hint="pip install plasm-exec next to phase-verify "
                               "(pipx inject phase-verify ./packages/plasm-exec)") from None
    from phase_core import home
    from phase_core.cas import ContentStore

    if args["--manifest"]:
        manifest_path = Path(args["--manifest"])
    elif not source.startswith("stdin") and ":" not in source:
        manifest_path = receipts.manifest_path_for(Path(source))
    else:
        raise UsageError("--reexec on stdin needs --manifest")
    try:
        manifest_obj = parse(manifest_path.read_bytes(), max_bytes=opts["max_bytes"])
    except FileNotFoundError:
        raise MissingInput(f"no job manifest at {manifest_path}",
                           hint="pass --manifest FILE") from None
    cas = ContentStore(home.cas_path(home.resolve(args["--home"])))
    if "executor" not in opts:  # one for the run: each module is compiled or loaded once
        from plasm_exec.api import Executor

        opts["executor"] = Executor(cas.root.parent)
    done = reexec.verify_receipt(verified.envelope, manifest_obj=manifest_obj, cas=cas,
                                 keyring=opts["keyring"], now=opts["now"],
                                 executor=opts["executor"])
    return {"checked": list(done.checked), "partial": done.partial}
