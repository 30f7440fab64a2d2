"""Making signed envelopes: the signing message, a document's id, ``sign``.

The half of ``envelope`` (docs/documents.md) a signer needs, in a module of its
own so that signing loads neither the ``Envelope`` dataclass nor the keyring
reader that verification uses. ``envelope`` re-exports every name here: code
keeps calling ``envelope.sign``.

Pure: no clock, no files, no network.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeGuard

from phase_core.canonical import canonical, content_id
from phase_core.errors import InputError, Malformed

if TYPE_CHECKING:
    from phase_core.identity import Identity

_TYPE_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_"


def is_type_name(value: object) -> TypeGuard[str]:
    """``value`` is a document type's name: ``[a-z][a-z0-9_]{0,31}``."""
    return (isinstance(value, str) and 0 < len(value) <= 32 and "a" <= value[0] <= "z"
            and not value.strip(_TYPE_CHARS))


def signing_message(doc_type: str, body: dict[str, Any]) -> bytes:
    if not is_type_name(doc_type):
        raise Malformed(f"document type {doc_type[:40]!r} is not a valid type name")
    return b"phase:" + doc_type.encode() + b":v1\n" + canonical(body)


def document_id(doc_type: str, body: dict[str, Any]) -> str:
    return content_id(signing_message(doc_type, body))


class AlreadySigned(InputError, ValueError):
    """The same key would sign a document twice (exit 65; also a ``ValueError``)."""

    slug = "already_signed"


def sign(doc_type: str, body: dict[str, Any], signers: Sequence[Identity]) -> dict[str, Any]:
    """A new envelope of ``body`` signed by each of ``signers``."""
    if not signers:
        raise ValueError("at least one signer is needed")
    msg = signing_message(doc_type, body)
    sigs = [{"key": s.node_id, "sig": s.sign(msg).hex()} for s in signers]
    if len({s["key"] for s in sigs}) != len(sigs):
        raise AlreadySigned("the same key is given more than once",
                            hint="each signer signs once; give distinct --key files")
    return {"v": 1, "type": doc_type, "body": body, "signatures": sigs}
