"""Ed25519 signatures. The only module that touches PyNaCl.

Keys and signatures cross this border as raw bytes. The calls go straight to the
libsodium that PyNaCl ships (its compiled ``nacl._sodium`` module, the same
functions PyNaCl's own wrappers call): importing ``nacl.signing`` would load every
one of PyNaCl's binding modules (AEAD, password hashing, boxes, …), a few ms of
every cold start that signs or verifies (docs/performance.md, "plasm-exec cold
start"). The results are byte for byte PyNaCl's (``tests/phase_core/test_crypto.py``).
"""

from __future__ import annotations

import functools
import os

from nacl._sodium import ffi, lib

from phase_core.errors import BadSignature, InternalError, Malformed

SEED_BYTES = 32
PUBLIC_BYTES = 32
SIGNATURE_BYTES = 64
_EXPANDED_BYTES = 64  # libsodium's Ed25519 secret key: the seed, then the public key
_X25519_BYTES = 32

if lib.sodium_init() < 0:  # idempotent; PyNaCl calls it at import as well
    raise InternalError("libsodium failed to initialise")


def new_seed() -> bytes:
    """A fresh random Ed25519 seed (the secret key)."""
    return os.urandom(SEED_BYTES)


def public_key(seed: bytes) -> bytes:
    _check_len(seed, SEED_BYTES, "secret key")
    return _expanded(bytes(seed))[SEED_BYTES:]


def sign(seed: bytes, message: bytes) -> bytes:
    """Plain Ed25519 (no pre-hash) signature of ``message``."""
    _check_len(seed, SEED_BYTES, "secret key")
    sk = _expanded(bytes(seed))
    signed = ffi.new("unsigned char[]", len(message) + SIGNATURE_BYTES)
    signed_len = ffi.new("unsigned long long *")
    if lib.crypto_sign(signed, signed_len, message, len(message), sk) != 0:
        raise InternalError("libsodium could not sign")
    return bytes(ffi.buffer(signed, SIGNATURE_BYTES))


@functools.lru_cache(maxsize=16)
def _expanded(seed: bytes) -> bytes:
    """The expanded key of ``seed`` (deriving it costs about as much as a signature;
    a node signs every receipt with one key). The seed is in memory already."""
    pk = ffi.new("unsigned char[]", PUBLIC_BYTES)
    sk = ffi.new("unsigned char[]", _EXPANDED_BYTES)
    if lib.crypto_sign_seed_keypair(pk, sk, seed) != 0:
        raise InternalError("libsodium could not derive a key pair")
    return bytes(ffi.buffer(sk, _EXPANDED_BYTES))


def verify(public: bytes, message: bytes, signature: bytes) -> None:
    """Return if ``signature`` is valid for ``message`` under ``public``; else raise."""
    _check_len(public, PUBLIC_BYTES, "public key")
    _check_len(signature, SIGNATURE_BYTES, "signature")
    signed = bytes(signature) + bytes(message)
    out = ffi.new("unsigned char[]", len(signed))
    out_len = ffi.new("unsigned long long *")
    if lib.crypto_sign_open(out, out_len, signed, len(signed), bytes(public)) != 0:
        raise BadSignature("signature does not verify")


def x25519_public(public: bytes) -> bytes:
    """The X25519 form of an Ed25519 public key (for the Noise handshake)."""
    _check_len(public, PUBLIC_BYTES, "public key")
    out = ffi.new("unsigned char[]", _X25519_BYTES)
    if lib.crypto_sign_ed25519_pk_to_curve25519(out, bytes(public)) != 0:
        raise Malformed("public key is not a valid Ed25519 point")
    return bytes(ffi.buffer(out, _X25519_BYTES))


def x25519_secret(seed: bytes) -> bytes:
    """The X25519 form of an Ed25519 secret key (for the Noise handshake)."""
    _check_len(seed, SEED_BYTES, "secret key")
    out = ffi.new("unsigned char[]", _X25519_BYTES)
    if lib.crypto_sign_ed25519_sk_to_curve25519(out, _expanded(bytes(seed))) != 0:
        raise InternalError("libsodium could not convert the secret key")
    return bytes(ffi.buffer(out, _X25519_BYTES))


def _check_len(b: bytes, n: int, what: str) -> None:
    if not isinstance(b, bytes | bytearray) or len(b) != n:
        raise Malformed(f"{what} must be {n} bytes")
