"""Signed envelopes (docs/documents.md).

``{"v": 1, "type": T, "body": {...}, "signatures": [{"key": K, "sig": S}, ...]}``

Each S is plain Ed25519 over ``b"phase:" + T + b":v1\\n" + canonical(body)``.
The type in the signing message separates domains: a receipt's signature can
never pass for a manifest's. A document's id is the content id of its signing
message, so it does not depend on who signed or in what order.

Pure: no clock, no files, no network.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from phase_core import crypto
from phase_core.canonical import content_id, is_hex
from phase_core.errors import (
    BadSignature,
    Malformed,
    ThresholdNotMet,
    TooLarge,
    UntrustedSigner,
    WrongType,
)
from phase_core.signing import AlreadySigned, document_id, is_type_name, sign, signing_message

if TYPE_CHECKING:
    from phase_core.identity import Identity
    from phase_core.trust import Keyring, TrustedKey

__all__ = ["DOC_TYPES", "AlreadySigned", "Envelope", "add_signature", "check_signatures",
           "document_id", "parse", "sign", "signer_keys", "signing_message",
           "trusted_signers"]

DOC_TYPES = ("job_manifest", "receipt", "node_record", "boot_manifest")
MAX_SIGNATURES = 16
ENVELOPE_FIELDS = frozenset({"v", "type", "body", "signatures"})


@dataclass(frozen=True)
class Envelope:
    """A structurally valid envelope whose signatures have not been checked yet."""

    type: str
    body: dict[str, Any]
    signatures: tuple[tuple[str, str], ...]  # (key hex, sig hex)
    message: bytes
    id: str

    def to_json(self) -> dict[str, Any]:
        return {"v": 1, "type": self.type, "body": self.body,
                "signatures": [{"key": k, "sig": s} for k, s in self.signatures]}


def add_signature(envelope: dict[str, Any], signer: Identity) -> dict[str, Any]:
    """The envelope with one more signature (co-signing for k-of-n thresholds)."""
    env = parse(envelope)
    if any(k == signer.node_id for k, _ in env.signatures):
        raise AlreadySigned(f"key {signer.node_id[:16]}… has already signed this document",
                            hint="co-sign with another signer's key; the envelope is unchanged")
    out = env.to_json()
    out["signatures"].append({"key": signer.node_id, "sig": signer.sign(env.message).hex()})
    return out


def parse(obj: Any) -> Envelope:
    """Check an envelope's structure (not its signatures). Raise on anything odd."""
    if not isinstance(obj, dict):
        raise Malformed("a signed document must be a JSON object")
    extra = set(obj) - ENVELOPE_FIELDS
    if extra:
        raise Malformed(f"unknown envelope field(s) {sorted(extra)[:8]}",
                        hint="an envelope has exactly v, type, body and signatures")
    missing = ENVELOPE_FIELDS - set(obj)
    if missing:
        raise Malformed(f"envelope is missing {', '.join(sorted(missing))}")
    if obj["v"] != 1 or isinstance(obj["v"], bool):
        raise Malformed(f"unsupported envelope version {obj['v']!r}", hint="this tool reads v 1")
    doc_type = obj["type"]
    if not is_type_name(doc_type):
        raise Malformed("envelope type must be a short lowercase name")
    if doc_type not in DOC_TYPES:
        raise WrongType(f"unknown document type {doc_type!r}",
                        hint=f"known types: {', '.join(DOC_TYPES)}")
    body = obj["body"]
    if not isinstance(body, dict):
        raise Malformed("envelope body must be a JSON object")
    sigs = obj["signatures"]
    if not isinstance(sigs, list) or not sigs:
        raise Malformed("envelope needs a non-empty list of signatures")
    if len(sigs) > MAX_SIGNATURES:
        raise TooLarge(f"envelope has {len(sigs)} signatures; at most {MAX_SIGNATURES} allowed")
    out: list[tuple[str, str]] = []
    for i, s in enumerate(sigs):
        if not isinstance(s, dict) or set(s) != {"key", "sig"}:
            raise Malformed(f"signatures[{i}] must be an object with exactly key and sig")
        k, sig = s["key"], s["sig"]
        if not is_hex(k, 64):
            raise Malformed(f"signatures[{i}].key must be 64 lowercase hex characters")
        if not is_hex(sig, 128):
            raise Malformed(f"signatures[{i}].sig must be 128 lowercase hex characters")
        out.append((k, sig))
    if len({k for k, _ in out}) != len(out):
        raise Malformed("the same key appears twice in signatures")
    msg = signing_message(doc_type, body)
    return Envelope(doc_type, body, tuple(out), msg, content_id(msg))


def check_signatures(env: Envelope) -> None:
    """Every signature must verify, whoever made it; raise ``BadSignature`` otherwise."""
    for key, sig in env.signatures:
        try:
            crypto.verify(bytes.fromhex(key), env.message, bytes.fromhex(sig))
        except BadSignature:
            raise BadSignature(
                f"signature by {key[:16]}… does not verify for this {env.type}",
                hint="the document was changed after signing, or signed as another type",
                key=key) from None


def trusted_signers(env: Envelope, keyring: Keyring, role: str,
                    threshold: int | None = None) -> list[TrustedKey]:
    """The keyring entries that signed ``env`` with ``role``; raise below the threshold.

    Call after ``check_signatures``.
    """
    need = keyring.threshold(role) if threshold is None else threshold
    if need < 1:
        raise ValueError("threshold must be at least 1")
    found = [keyring.keys[k] for k, _ in env.signatures if keyring.allows(k, role)]
    if not found:
        names = [keyring.name_of(k) for k, _ in env.signatures]
        known = [n for n in names if n]
        why = (f"signed by {', '.join(known)}, who may not act as {role}" if known
               else "no signer is in the keyring")
        raise UntrustedSigner(f"{env.type} has no trusted {role} signature: {why}",
                              hint=f"add the signer to the keyring with role {role} "
                                   "if you trust it")
    if len(found) < need:
        raise ThresholdNotMet(
            f"{env.type} has {len(found)} trusted {role} signature(s); {need} required",
            hint="ask more key holders to co-sign (phase-key cosign)")
    return found


def signer_keys(env: Envelope) -> Iterable[str]:
    return (k for k, _ in env.signatures)
