"""``phase_core.crypto`` calls libsodium through PyNaCl's compiled module, without
PyNaCl's wrappers: every result must be what PyNaCl's public API gives, and the
wrappers must stay unloaded (they cost every cold start a few ms)."""

from __future__ import annotations

import json
import subprocess
import sys

import nacl.bindings
import nacl.exceptions
import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phase_core import crypto
from phase_core.errors import BadSignature, Malformed

# RFC 8032, section 7.1, TEST 1 (the empty message)
RFC_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC_SIG = bytes.fromhex("e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
                        "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b")


def test_the_rfc_8032_vector():
    assert crypto.public_key(RFC_SEED) == RFC_PUBLIC
    assert crypto.sign(RFC_SEED, b"") == RFC_SIG
    crypto.verify(RFC_PUBLIC, b"", RFC_SIG)


@settings(max_examples=200)
@given(st.binary(min_size=32, max_size=32), st.binary(max_size=2048), st.integers(0, 511))
def test_every_result_is_pynacls(seed, message, flip):
    key = nacl.signing.SigningKey(seed)
    public = bytes(key.verify_key)
    assert crypto.public_key(seed) == public
    sig = crypto.sign(seed, message)
    assert sig == key.sign(message).signature
    crypto.verify(public, message, sig)
    assert crypto.x25519_secret(seed) == bytes(key.to_curve25519_private_key())
    assert crypto.x25519_public(public) == bytes(key.verify_key.to_curve25519_public_key())
    bad = bytearray(sig)
    bad[flip // 8] ^= 1 << (flip % 8)
    with pytest.raises(BadSignature):
        crypto.verify(public, message, bytes(bad))
    with pytest.raises(nacl.exceptions.BadSignatureError):
        key.verify_key.verify(message, bytes(bad))


@pytest.mark.parametrize("public", [b"\xff" * 32, b"\x00" * 32, bytes([1] + [0] * 31)])
def test_points_pynacl_refuses_are_refused(public):
    with pytest.raises(Malformed):
        crypto.x25519_public(public)
    with pytest.raises((nacl.exceptions.RuntimeError, nacl.exceptions.ValueError)):
        nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(public)
    with pytest.raises(BadSignature):
        crypto.verify(public, b"m", bytes(64))


def test_lengths_are_checked():
    with pytest.raises(Malformed):
        crypto.sign(b"short", b"m")
    with pytest.raises(Malformed):
        crypto.verify(RFC_PUBLIC, b"", RFC_SIG[:63])
    with pytest.raises(Malformed):
        crypto.public_key(RFC_SEED + b"x")


def test_new_seeds_are_fresh_keys():
    a, b = crypto.new_seed(), crypto.new_seed()
    assert len(a) == len(b) == crypto.SEED_BYTES and a != b
    crypto.verify(crypto.public_key(a), b"m", crypto.sign(a, b"m"))


def test_pynacls_wrappers_stay_unloaded():
    code = ("import json, sys; from phase_core import crypto, identity; "
            "identity.Identity.generate().sign(b'm'); "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('nacl.'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert json.loads(out) == ["nacl._sodium"], out
