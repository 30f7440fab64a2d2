"""Verify any signed document: the one entry point every tool uses.

Order of checks (each raises its own error, see errors.py):
structure → type → every signature → trusted signers and threshold → body
schema → bindings (a receipt is signed by its worker, a node record by its
node) → validity window → rollback. Rollback is checked only after everything
else, and nothing here writes state: the caller records a high-water mark only
after this returns.

A node record names its own signer in its body, so for it the body schema
comes before the signer check (a malformed ``node_id`` is ``malformed``).

Pure: the keyring, the clock and the rollback marks are passed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from phase_core import boot, envelope, manifest, receipt, records
from phase_core.errors import (
    Expired,
    Malformed,
    NotYetValid,
    Rollback,
    UntrustedSigner,
    WrongType,
)
from phase_core.timefmt import format_time, parse_time
from phase_core.trust import Keyring, TrustedKey

DEFAULT_ROLES = {
    manifest.TYPE: manifest.ROLE,
    receipt.TYPE: receipt.ROLE,
    boot.TYPE: boot.ROLE,
}
MAX_CLOCK_SKEW_S = 300


@dataclass(frozen=True)
class Mark:
    """A rollback high-water mark: the newest version seen and its document id."""

    version: int
    id: str


@dataclass(frozen=True)
class Policy:
    keyring: Keyring
    now: int
    role: str | None = None
    threshold: int | None = None
    expected_type: str | None = None
    marks: Mapping[str, Mark] = field(default_factory=dict)
    max_skew_s: int = MAX_CLOCK_SKEW_S


@dataclass(frozen=True)
class Verified:
    type: str
    id: str
    body: dict[str, Any]
    signers: tuple[TrustedKey, ...]
    envelope: dict[str, Any]

    def record(self) -> dict[str, Any]:
        """The ``verified`` JSON-lines record phase-verify writes."""
        return {"v": 1, "type": "verified", "doc_type": self.type, "id": self.id,
                "signers": [t.name for t in self.signers],
                "signer_keys": [t.key for t in self.signers],
                "body": self.body, "envelope": self.envelope}

    @property
    def rollback_key(self) -> str | None:
        return boot.rollback_key(self.body) if self.type == boot.TYPE else None


def verify(obj: Any, policy: Policy) -> Verified:
    """Return the verified document or raise the specific error."""
    env = envelope.parse(obj)
    if policy.expected_type is not None and env.type != policy.expected_type:
        raise WrongType(f"expected a {policy.expected_type}, got a {env.type}")
    envelope.check_signatures(env)
    body = env.body
    if env.type == records.TYPE:
        # A node record names its own signer, so its body is read to find the
        # signer: check the body's schema first, then who signed.
        _check_body(env.type, body)
        signers = _self_signed(env, policy.keyring)
    else:
        role = policy.role or DEFAULT_ROLES[env.type]
        signers = tuple(envelope.trusted_signers(env, policy.keyring, role, policy.threshold))
        _check_body(env.type, body)
    if env.type == receipt.TYPE and body["worker"] not in {t.key for t in signers}:
        raise UntrustedSigner(
            f"receipt names worker {body['worker'][:16]}… but that worker's trusted "
            "signature is not on it")
    _check_window(env.type, body, policy)
    if env.type == boot.TYPE:
        _check_rollback(body, env.id, policy.marks)
    return Verified(env.type, env.id, body, signers, env.to_json())


def _self_signed(env: envelope.Envelope, keyring: Keyring) -> tuple[TrustedKey, ...]:
    """The node record's signer; call after its body passed the schema."""
    node_id = env.body["node_id"]
    if not isinstance(node_id, str) or node_id not in set(envelope.signer_keys(env)):
        raise UntrustedSigner("a node record must be signed by the node it describes")
    name = keyring.name_of(node_id) or f"node-{node_id[:12]}"
    return (TrustedKey(name, node_id, frozenset()),)


def _check_body(doc_type: str, body: dict[str, Any]) -> None:
    if doc_type == manifest.TYPE:
        manifest.BODY(body, doc_type)
    elif doc_type == receipt.TYPE:
        receipt.check(body)
    elif doc_type == boot.TYPE:
        boot.BODY(body, doc_type)
    elif doc_type == records.TYPE:
        records.BODY(body, doc_type)
    else:  # parse() already refused unknown types
        raise WrongType(f"unknown document type {doc_type!r}")


def _check_window(doc_type: str, body: dict[str, Any], policy: Policy) -> None:
    now = policy.now
    if doc_type == receipt.TYPE:
        completed = parse_time(body["completed"], "receipt.completed")
        if completed > now + policy.max_skew_s:
            raise NotYetValid(f"receipt completed at {body['completed']}, in the future "
                              f"(now {format_time(now)})", hint="check the clock, or pass --now")
        return
    created = parse_time(body["created"], f"{doc_type}.created")
    expires = parse_time(body["expires"], f"{doc_type}.expires")
    if expires <= created:
        raise Malformed(f"{doc_type} expires ({body['expires']}) before it is created")
    if created > now + policy.max_skew_s:
        raise NotYetValid(f"{doc_type} is created at {body['created']}, later than now "
                          f"({format_time(now)})", hint="check the clock, or pass --now")
    if now >= expires:
        raise Expired(f"{doc_type} expired at {body['expires']} (now {format_time(now)})",
                      hint="ask the signer for a fresh document")


def _check_rollback(body: dict[str, Any], doc_id: str, marks: Mapping[str, Mark]) -> None:
    key = boot.rollback_key(body)
    mark = marks.get(key)
    if mark is None:
        return
    version = body["version"]
    if version < mark.version:
        raise Rollback(f"{key} version {version} is older than version {mark.version} "
                       "already accepted", hint="a mirror may be serving a stale manifest")
    if version == mark.version and doc_id != mark.id:
        raise Rollback(f"{key} version {version} differs from the version {version} "
                       "already accepted", hint="a signer issued two manifests with one "
                       "version; treat it as compromised")
