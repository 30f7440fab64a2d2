"""Pipeline input: which blobs a JSON-lines record references.

Accepted records (anything else is dropped, as the house style says):

- ``verified`` records from phase-verify with ``doc_type`` ``boot_manifest`` or
  ``job_manifest``: the embedded ``envelope`` is verified again here (keyring,
  clock and rollback marks injected) and only the verified body is used. If the
  record's own ``body`` or ``id`` differ from the signed document, the record is
  rejected (``record_mismatch``): a forged upstream record cannot smuggle in an
  unsigned artifact list or mirror.
- bare signed envelopes of type ``boot_manifest`` or ``job_manifest``: verified
  the same way.
- ``fetch`` (or ``blob``) records: ``{"id", "size_bytes" | "size", "mirrors", "name"}``,
  all but ``id`` optional. These are plain requests; the bytes are still
  checked against the id.

Other ``verified`` records (receipts, node records) are passed on unchanged.
``error`` records are passed on by the caller (phase_core.cli.pipeline).

Where a signed document's blobs come from, after the CAS, ``--from-dir`` and
``--mirror``: the record's unsigned ``sources`` hints (phase-verify copies the
provider URL phase-discover found into them), then the manifest's signed
``mirrors``. Every byte is checked against the signed content id either way. A
hint that is not an http(s) URL is skipped with a warning.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from phase_core import boot, log, manifest
from phase_core.documents import Policy, Verified, verify
from phase_core.errors import Malformed, Rejected
from phase_fetch.want import MAX_MIRRORS, Want, check_mirror

SIGNED_TYPES = (boot.TYPE, manifest.TYPE)
PLAIN_TYPES = ("fetch", "blob")


@dataclass
class Job:
    """One input record, the blobs it references (slot name → want), and what to pass on."""

    line: int
    record: dict[str, Any]
    wants: list[tuple[str, Want]] = field(default_factory=list)
    passthrough: bool = True


def acts_on(rec: dict[str, Any]) -> bool:
    """True for the record types phase-fetch handles (the others are dropped)."""
    rtype = rec.get("type")
    return rtype == "verified" or rtype in PLAIN_TYPES or (
        rtype in SIGNED_TYPES and "signatures" in rec)


def parse_record(rec: dict[str, Any], line: int, policy: Callable[[str], Policy]) -> Job | None:
    """The job for one record, ``None`` to drop it, or raise (bad input, bad signature)."""
    rtype = rec.get("type")
    if rtype == "verified":
        doc_type = rec.get("doc_type")
        if doc_type not in SIGNED_TYPES:
            return Job(line, rec)  # nothing to fetch; pass it on
        if not isinstance(rec.get("envelope"), dict):
            raise Malformed(f"line {line}: a verified {doc_type} record without its envelope",
                            hint="phase-fetch re-verifies signed documents; pass the record "
                                 "phase-verify wrote, unmodified")
        v = verify(rec["envelope"], policy(str(doc_type)))
        if rec.get("id", v.id) != v.id or rec.get("body", v.body) != v.body:
            raise Rejected(f"line {line}: the record's body or id differ from its signed "
                           "envelope", slug="record_mismatch",
                           hint="an upstream stage altered the record; do not trust it")
        return Job(line, rec, wants_of(v, hints(rec, line)))
    if rtype in SIGNED_TYPES and "signatures" in rec:
        v = verify(rec, policy(str(rtype)))
        return Job(line, rec, wants_of(v))
    if rtype in PLAIN_TYPES:
        size = rec.get("size_bytes", rec.get("size"))
        mirrors = rec.get("mirrors", [])
        if not isinstance(mirrors, list):
            raise Malformed(f"line {line}: mirrors must be a list of URLs")
        want = Want.of(rec.get("id"), size, mirrors, rec.get("name"))
        return Job(line, rec, [(want.name or want.id[7:], want)])
    return None


def hints(rec: dict[str, Any], line: int) -> list[str]:
    """The record's ``sources`` that are usable mirror URLs (unsigned hints)."""
    raw = rec.get("sources", [])
    if not isinstance(raw, list):
        raw = []
    out: list[str] = []
    for url in raw[:MAX_MIRRORS]:
        try:
            out.append(check_mirror(url))
        except Malformed as e:
            log.get().warning("fetch.bad_source_hint", line=line, message=e.message)
    return out


def wants_of(v: Verified, sources: list[str] | None = None) -> list[tuple[str, Want]]:
    body = v.body
    first = list(sources or [])
    if v.type == boot.TYPE:
        mirrors = tuple(dict.fromkeys([*first, *body.get("mirrors", ())]))[:MAX_MIRRORS]
        return [(name, Want.of(art["id"], art["size"], mirrors, name))
                for name, art in boot.artifacts(body)]
    out = [("module", Want.of(body["module"], None, first, "module"))]
    if body.get("stdin") is not None:
        out.append(("stdin", Want.of(body["stdin"], None, first, "stdin")))
    return out
