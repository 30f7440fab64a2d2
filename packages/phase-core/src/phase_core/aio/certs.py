"""Ephemeral self-signed TLS certificates for the QUIC transport.

The only module besides ``aio.quic`` that imports ``cryptography``. A
certificate is made per endpoint (per ``listen`` / per client) and never
written to disk. TLS does not authenticate nodes (the Noise handshake does),
so the certificate carries no identity: a fixed subject, a random serial, a
fresh Ed25519 key and a validity window that never needs a clock.
"""

from __future__ import annotations

import datetime
import secrets
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

SUBJECT = "phase-node"
_NOT_BEFORE = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)
_NOT_AFTER = datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC)


@dataclass(frozen=True)
class EphemeralCert:
    """A certificate and its key, as the objects aioquic wants, plus the DER bytes."""

    certificate: Any  # cryptography x509.Certificate
    private_key: Any  # cryptography Ed25519PrivateKey
    der: bytes


def make() -> EphemeralCert:
    key = ed25519.Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SUBJECT)])
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(int.from_bytes(secrets.token_bytes(16), "big") >> 1)
            .not_valid_before(_NOT_BEFORE).not_valid_after(_NOT_AFTER)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(SUBJECT)]),
                           critical=False)
            .sign(key, None))
    return EphemeralCert(cert, key, cert.public_bytes(serialization.Encoding.DER))


def der_of(certificate: Any) -> bytes:
    """The DER bytes of a cryptography certificate (as aioquic hands us the peer's)."""
    if not isinstance(certificate, x509.Certificate):
        raise TypeError("not an X.509 certificate")
    return certificate.public_bytes(serialization.Encoding.DER)
