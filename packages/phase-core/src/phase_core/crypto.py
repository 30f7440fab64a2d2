"""Ed25519 signatures. The only module that imports PyNaCl.

Keys and signatures cross this border as raw bytes; PyNaCl's exceptions are
translated to ours here.
"""

from __future__ import annotations

import functools

import nacl.bindings
import nacl.exceptions
import nacl.signing

from phase_core.errors import BadSignature, Malformed

SEED_BYTES = 32
PUBLIC_BYTES = 32
SIGNATURE_BYTES = 64


def new_seed() -> bytes:
    """A fresh random Ed25519 seed (the secret key)."""
    return bytes(nacl.signing.SigningKey.generate())


def public_key(seed: bytes) -> bytes:
    _check_len(seed, SEED_BYTES, "secret key")
    return bytes(nacl.signing.SigningKey(seed).verify_key)


def sign(seed: bytes, message: bytes) -> bytes:
    """Plain Ed25519 (no pre-hash) signature of ``message``."""
    _check_len(seed, SEED_BYTES, "secret key")
    return _signing_key(bytes(seed)).sign(message).signature


@functools.lru_cache(maxsize=16)
def _signing_key(seed: bytes) -> nacl.signing.SigningKey:
    """The expanded key of ``seed`` (deriving it costs about as much as a signature;
    a node signs every receipt with one key). The seed is in memory already."""
    return nacl.signing.SigningKey(seed)


def verify(public: bytes, message: bytes, signature: bytes) -> None:
    """Return if ``signature`` is valid for ``message`` under ``public``; else raise."""
    _check_len(public, PUBLIC_BYTES, "public key")
    _check_len(signature, SIGNATURE_BYTES, "signature")
    try:
        nacl.signing.VerifyKey(public).verify(message, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError,
            nacl.exceptions.TypeError):
        raise BadSignature("signature does not verify") from None


def x25519_public(public: bytes) -> bytes:
    """The X25519 form of an Ed25519 public key (for the Noise handshake)."""
    _check_len(public, PUBLIC_BYTES, "public key")
    try:
        return bytes(nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(public))
    except (nacl.exceptions.RuntimeError, nacl.exceptions.ValueError):
        raise Malformed("public key is not a valid Ed25519 point") from None


def x25519_secret(seed: bytes) -> bytes:
    """The X25519 form of an Ed25519 secret key (for the Noise handshake)."""
    _check_len(seed, SEED_BYTES, "secret key")
    sk = nacl.signing.SigningKey(seed)
    return bytes(sk.to_curve25519_private_key())


def _check_len(b: bytes, n: int, what: str) -> None:
    if not isinstance(b, bytes | bytearray) or len(b) != n:
        raise Malformed(f"{what} must be {n} bytes")
