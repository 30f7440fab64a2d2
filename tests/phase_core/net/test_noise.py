"""The Noise XX handshake state machine, paired in memory."""

from __future__ import annotations

import hashlib
import struct

import pytest

from phase_core.errors import BadSignature, PhaseError, ProtocolViolation, UntrustedSigner
from phase_core.identity import Identity
from phase_core.protocol import noise
from phase_core.protocol.framing import FrameTooLarge
from phase_core.protocol.noise import Established, Handshake, PeerVerified, prologue

CERT_I = b"initiator certificate DER"
CERT_R = b"responder certificate DER"
PRO = prologue(CERT_I, CERT_R)


def pump(a: Handshake, b: Handshake, *, tamper: int | None = None) -> tuple[list, list]:
    """Move bytes both ways until quiet; optionally flip bit 0 of wire byte ``tamper``."""
    ev_a: list = []
    ev_b: list = []
    sent = 0
    for _ in range(10):
        moved = False
        for src, dst, evs in ((a, b, ev_b), (b, a, ev_a)):
            data = bytearray(src.data_to_send())
            if not data:
                continue
            moved = True
            if tamper is not None and sent <= tamper < sent + len(data):
                data[tamper - sent] ^= 1
            sent += len(data)
            evs.extend(dst.receive_data(bytes(data)))
            if dst is b and b.state == noise.VERIFIED:
                b.accept()
        if not moved:
            break
    return ev_a, ev_b


def pair(ia: Identity, ib: Identity, **kw: object) -> tuple[Handshake, Handshake]:
    a = Handshake(initiator=True, identity=ia, prologue=kw.pop("pro_a", PRO),  # type: ignore[arg-type]
                  expected_peer=kw.pop("expected", None))  # type: ignore[arg-type]
    b = Handshake(initiator=False, identity=ib, prologue=kw.pop("pro_b", PRO))  # type: ignore[arg-type]
    return a, b


def test_both_ends_learn_the_peer_id() -> None:
    ia, ib = Identity.generate(), Identity.generate()
    a, b = pair(ia, ib, expected=ib.node_id)
    ev_a, ev_b = pump(a, b)
    assert a.established and b.established
    assert a.peer_id == ib.node_id and b.peer_id == ia.node_id
    assert ev_b == [PeerVerified(ia.node_id)]
    assert ev_a[0] == PeerVerified(ib.node_id)
    assert isinstance(ev_a[1], Established) and ev_a[1].node_id == ib.node_id
    assert a.handshake_hash == b.handshake_hash and a.handshake_hash is not None


def test_message_sizes_on_the_wire() -> None:
    ia, ib = Identity.generate(), Identity.generate()
    a, b = pair(ia, ib)
    m1 = a.data_to_send()
    b.receive_data(m1)
    m2 = b.data_to_send()
    a.receive_data(m2)
    m3 = a.data_to_send()
    b.receive_data(m3)
    b.accept()
    m4 = b.data_to_send()
    assert [len(m) - 2 for m in (m1, m2, m3, m4)] == [32, 192, 160, 16]


def test_explicit_static_keys_work_and_are_signed() -> None:
    ia, ib = Identity.generate(), Identity.generate()
    a = Handshake(initiator=True, identity=ia, prologue=PRO, static_secret=b"\x01" * 32)
    b = Handshake(initiator=False, identity=ib, prologue=PRO, static_secret=b"\x02" * 32)
    pump(a, b)
    assert a.peer_id == ib.node_id and b.peer_id == ia.node_id


@pytest.mark.parametrize("byte", [2, 10, 40, 60, 100, 200, 250, 300, 395])
def test_flipped_bit_fails_the_handshake(byte: int) -> None:
    ia, ib = Identity.generate(), Identity.generate()
    a, b = pair(ia, ib)
    with pytest.raises(ProtocolViolation):
        pump(a, b, tamper=byte)
    assert not (a.established and b.established)


def test_prologue_mismatch_fails_at_msg2() -> None:
    ia, ib = Identity.generate(), Identity.generate()
    a, b = pair(ia, ib, pro_a=prologue(CERT_I, b"relay cert"), pro_b=prologue(b"relay 2", CERT_R))
    b.receive_data(a.data_to_send())
    with pytest.raises(ProtocolViolation) as ei:
        a.receive_data(b.data_to_send())
    assert ei.value.slug == "handshake_failed"
    assert a.peer_id is None
    with pytest.raises(ProtocolViolation):  # stays failed
        a.receive_data(b"")


def test_prologue_binds_both_certificates_in_order() -> None:
    assert prologue(CERT_I, CERT_R) != prologue(CERT_R, CERT_I)
    assert prologue(CERT_I, CERT_R) == (noise.PROLOGUE_LABEL + hashlib.sha256(CERT_I).digest()
                                        + hashlib.sha256(CERT_R).digest())


def test_expected_peer_mismatch() -> None:
    ia, ib = Identity.generate(), Identity.generate()
    a, b = pair(ia, ib, expected=Identity.generate().node_id)
    with pytest.raises(UntrustedSigner) as ei:
        pump(a, b)
    assert ei.value.slug == "wrong_peer"
    assert b.peer_id is None  # msg3 was never sent


class _Impostor(Handshake):
    """Claims ``victim``'s node id: its payload carries the victim's public key."""

    def __init__(self, victim: Identity, forged_sig: bytes, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self._payload = victim.public + forged_sig


@pytest.mark.parametrize("how", ["own_key", "replayed"])
@pytest.mark.parametrize("role", ["initiator", "responder"])
def test_claiming_another_nodes_id_is_rejected(how: str, role: str) -> None:
    victim, honest, attacker = Identity.generate(), Identity.generate(), Identity.generate()
    if how == "own_key":
        # sign the attacker's real static key with the attacker's Ed25519 key
        probe = Handshake(initiator=True, identity=attacker, prologue=PRO)
        sig = probe._payload[32:]
    else:
        # replay the victim's genuine signature, made over the victim's static key
        sig = victim.sign(noise.static_signing_message(b"\x09" * 32))
    if role == "initiator":
        a: Handshake = _Impostor(victim, sig, initiator=True, identity=attacker, prologue=PRO)
        b = Handshake(initiator=False, identity=honest, prologue=PRO)
    else:
        a = Handshake(initiator=True, identity=honest, prologue=PRO)
        b = _Impostor(victim, sig, initiator=False, identity=attacker, prologue=PRO)
    with pytest.raises(BadSignature):
        pump(a, b)
    assert victim.node_id not in (a.peer_id, b.peer_id)


def test_oversized_handshake_message() -> None:
    b = Handshake(initiator=False, identity=Identity.generate(), prologue=PRO)
    with pytest.raises(FrameTooLarge):
        b.receive_data(struct.pack(">H", 65535))


def test_payload_in_msg1_rejected() -> None:
    from noise.connection import Keypair, NoiseConnection

    conn = NoiseConnection.from_name(noise.PROTOCOL_NAME)
    conn.set_as_initiator()
    conn.set_keypair_from_private_bytes(Keypair.STATIC, b"\x05" * 32)
    conn.set_prologue(PRO)
    conn.start_handshake()
    m = bytes(conn.write_message(b"hello"))
    b = Handshake(initiator=False, identity=Identity.generate(), prologue=PRO)
    with pytest.raises(ProtocolViolation):
        b.receive_data(struct.pack(">H", len(m)) + m)


def test_trailing_data_and_early_eof() -> None:
    ia, ib = Identity.generate(), Identity.generate()
    _a, b = pair(ia, ib)
    with pytest.raises(ProtocolViolation):
        b.receive_eof()
    a2, b2 = pair(ia, ib)
    pump(a2, b2)
    with pytest.raises(ProtocolViolation):
        a2.receive_data(struct.pack(">H", 3) + b"xyz")
    b2.receive_eof()  # fine once established


def test_garbage_is_a_protocol_violation_never_a_crash() -> None:
    import random

    rng = random.Random(1234)
    ib = Identity.generate()
    for _ in range(50):
        b = Handshake(initiator=False, identity=ib, prologue=PRO)
        n = rng.randrange(0, 300)
        junk = struct.pack(">H", n) + bytes(rng.randrange(256) for _ in range(n))
        try:
            b.receive_data(junk)
            b.receive_data(struct.pack(">H", 5) + b"12345")
        except PhaseError as e:
            assert isinstance(e, ProtocolViolation)
        else:
            raise AssertionError("garbage accepted")
