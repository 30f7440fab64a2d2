"""Node authentication: a sans-I/O Noise XX handshake (docs/transport.md).

The only module that imports ``noise`` (noiseprotocol). Bytes in
(``receive_data``), events and bytes out (``data_to_send``); no clock, no I/O.

Pattern ``Noise_XX_25519_ChaChaPoly_SHA256`` on the first bidirectional QUIC
stream. Each Noise message travels as ``length:u16be  message``; we cap a
handshake message at ``MAX_HANDSHAKE_MESSAGE_BYTES`` (noiseprotocol itself caps
nothing on the way in)::

    -> e                          msg1: 32 B, empty payload
    <- e, ee, s, es   + payload   msg2: 192 B
    -> s, se          + payload   msg3: 160 B
    <- confirm                    msg4: 16 B, an empty transport message

The prologue (``prologue()``) binds the handshake to the QUIC connection: a
fixed label and the SHA-256 of the initiator's and of the responder's TLS
certificate (DER). A relay that terminates TLS on both sides sees different
certificates on each side, so the two ends hash different prologues and msg2
fails to authenticate.

The payload of msg2 and msg3 is 96 bytes: the node's Ed25519 public key (its
node id, 32 B) and its Ed25519 signature (64 B) over
``STATIC_SIGNATURE_LABEL + noise_static_public``. Noise proves the peer holds
the static key; the signature ties that static key to the node id.

msg4 lets the initiator learn that the responder accepted it (the responder
may still refuse a verified peer, e.g. over a per-peer limit, by closing).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Any, NoReturn

from noise.connection import Keypair, NoiseConnection

from phase_core import crypto
from phase_core.errors import (
    BadSignature,
    InternalError,
    PhaseError,
    ProtocolViolation,
    UntrustedSigner,
)
from phase_core.identity import Identity
from phase_core.protocol.framing import FrameTooLarge

PROTOCOL_NAME = b"Noise_XX_25519_ChaChaPoly_SHA256"
PROLOGUE_LABEL = b"phase/1 noise-xx prologue v1\n"
STATIC_SIGNATURE_LABEL = b"phase:noise-static:v1\n"
MAX_NOISE_MESSAGE_BYTES = 65535  # the Noise spec's limit, and what u16 can say
MAX_HANDSHAKE_MESSAGE_BYTES = 1024  # ours: the real messages are at most 192 bytes
PAYLOAD_BYTES = crypto.PUBLIC_BYTES + crypto.SIGNATURE_BYTES  # 96
_LEN = struct.Struct(">H")

# states
AWAIT_MSG1 = "await_msg1"  # responder
AWAIT_MSG2 = "await_msg2"  # initiator
AWAIT_MSG3 = "await_msg3"  # responder
AWAIT_CONFIRM = "await_confirm"  # initiator: the peer is verified, not yet accepted us
VERIFIED = "verified"  # responder: the peer is verified; call accept()
ESTABLISHED = "established"
FAILED = "failed"


@dataclass(frozen=True, slots=True)
class PeerVerified:
    """The peer proved it holds the key of ``node_id`` (and its Noise static key)."""

    node_id: str


@dataclass(frozen=True, slots=True)
class Established:
    """Both ends are authenticated and the responder accepted the initiator."""

    node_id: str
    handshake_hash: bytes


Event = PeerVerified | Established


def prologue(initiator_cert_der: bytes, responder_cert_der: bytes) -> bytes:
    """The prologue both ends hash: label ‖ SHA-256(initiator cert) ‖ SHA-256(responder cert)."""
    return (PROLOGUE_LABEL + hashlib.sha256(initiator_cert_der).digest()
            + hashlib.sha256(responder_cert_der).digest())


def static_signing_message(static_public: bytes) -> bytes:
    return STATIC_SIGNATURE_LABEL + static_public


class Handshake:
    """One side of the XX handshake. Poisoned by the first error: every later call re-raises it."""

    def __init__(self, *, initiator: bool, identity: Identity, prologue: bytes,
                 static_secret: bytes | None = None, expected_peer: str | None = None,
                 max_message_bytes: int = MAX_HANDSHAKE_MESSAGE_BYTES) -> None:
        if not 0 < max_message_bytes <= MAX_NOISE_MESSAGE_BYTES:
            raise InternalError(f"max_message_bytes must be in 1..{MAX_NOISE_MESSAGE_BYTES}")
        self.initiator = initiator
        self.expected_peer = expected_peer
        self.max_message_bytes = max_message_bytes
        self.peer_id: str | None = None
        self.handshake_hash: bytes | None = None
        self._out = bytearray()
        self._in = bytearray()
        self._error: PhaseError | None = None
        secret = static_secret if static_secret is not None else identity.x25519_secret()
        try:
            conn = NoiseConnection.from_name(PROTOCOL_NAME)
            if initiator:
                conn.set_as_initiator()
            else:
                conn.set_as_responder()
            conn.set_keypair_from_private_bytes(Keypair.STATIC, bytes(secret))
            conn.set_prologue(bytes(prologue))
            conn.start_handshake()
        except Exception as e:  # noiseprotocol raises bare Exception and ValueError too
            raise InternalError(f"cannot set up the Noise handshake: {e}") from None
        self._conn: Any = conn
        # noiseprotocol drops the handshake state (and with it the remote static
        # key) when the last message is processed: keep a reference now.
        self._hs: Any = conn.noise_protocol.handshake_state
        static_public = bytes(conn.noise_protocol.keypairs["s"].public_bytes)
        self._payload = identity.public + identity.sign(static_signing_message(static_public))
        if initiator:
            self._send(self._conn.write_message(b""))
            self.state = AWAIT_MSG2
        else:
            self.state = AWAIT_MSG1

    # -- I/O surface ---------------------------------------------------------

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Feed bytes from the handshake stream; return what happened."""
        self._raise_if_failed()
        self._in += data
        events: list[Event] = []
        try:
            while (msg := self._next_message()) is not None:
                ev = self._handle(msg)
                if ev is not None:
                    events.append(ev)
        except PhaseError as e:
            self._fail(e)
        return events

    def receive_eof(self) -> None:
        """The handshake stream ended; fine only once established."""
        self._raise_if_failed()
        if self.state != ESTABLISHED:
            self._fail(ProtocolViolation(f"handshake stream ended in state {self.state}",
                                         slug="handshake_failed"))

    def accept(self) -> None:
        """Responder: accept the verified peer; queues the confirmation (msg4)."""
        self._raise_if_failed()
        if self.initiator or self.state != VERIFIED:
            raise InternalError(f"accept() in state {self.state}")
        self._send(self._conn.encrypt(b""))
        self.state = ESTABLISHED

    @property
    def established(self) -> bool:
        return self.state == ESTABLISHED

    # -- internals -----------------------------------------------------------

    def _next_message(self) -> bytes | None:
        buf = self._in
        if len(buf) < _LEN.size:
            return None
        (n,) = _LEN.unpack_from(buf)
        if n > self.max_message_bytes:
            raise FrameTooLarge(f"peer sent a {n}-byte handshake message, over the cap of "
                                f"{self.max_message_bytes}")
        if len(buf) < _LEN.size + n:
            return None
        msg = bytes(buf[_LEN.size:_LEN.size + n])
        del buf[:_LEN.size + n]
        return msg

    def _handle(self, msg: bytes) -> Event | None:
        state = self.state
        if state == AWAIT_MSG1:
            payload = self._read(msg)
            if payload:
                raise ProtocolViolation("handshake message 1 carries a payload",
                                        slug="handshake_failed")
            self._send(self._write(self._payload))
            self.state = AWAIT_MSG3
            return None
        if state == AWAIT_MSG2:
            peer = self._verify_payload(self._read(msg))
            self._send(self._write(self._payload))
            self.peer_id = peer
            self.state = AWAIT_CONFIRM
            return PeerVerified(peer)
        if state == AWAIT_MSG3:
            peer = self._verify_payload(self._read(msg))
            self.peer_id = peer
            self.handshake_hash = bytes(self._conn.get_handshake_hash())
            self.state = VERIFIED
            return PeerVerified(peer)
        if state == AWAIT_CONFIRM:
            try:
                confirm = self._conn.decrypt(msg)
            except Exception:
                raise ProtocolViolation("the peer's handshake confirmation did not "
                                        "authenticate", slug="handshake_failed") from None
            if confirm:
                raise ProtocolViolation("handshake confirmation carries a payload",
                                        slug="handshake_failed")
            self.handshake_hash = bytes(self._conn.get_handshake_hash())
            self.state = ESTABLISHED
            assert self.peer_id is not None
            return Established(self.peer_id, self.handshake_hash)
        raise ProtocolViolation(f"unexpected handshake data in state {state}",
                                slug="handshake_failed")

    def _read(self, msg: bytes) -> bytes:
        try:
            return bytes(self._conn.read_message(msg))
        except Exception:
            # InvalidTag, NoiseInvalidMessage, ValueError on a short or
            # low-order message: all mean the same to us.
            raise ProtocolViolation(
                "the peer's handshake message did not authenticate",
                hint="a relay in the middle (the TLS certificates differ on each side) "
                     "or a peer speaking another protocol version",
                slug="handshake_failed") from None

    def _write(self, payload: bytes) -> bytes:
        try:
            return bytes(self._conn.write_message(payload))
        except Exception as e:
            raise InternalError(f"cannot write a Noise handshake message: {e}") from None

    def _verify_payload(self, payload: bytes) -> str:
        if len(payload) != PAYLOAD_BYTES:
            raise ProtocolViolation(f"handshake payload is {len(payload)} bytes, expected "
                                    f"{PAYLOAD_BYTES}", slug="handshake_failed")
        public, sig = payload[:crypto.PUBLIC_BYTES], payload[crypto.PUBLIC_BYTES:]
        rs = getattr(self._hs, "rs", None)
        remote_static = getattr(rs, "public_bytes", None)
        if not isinstance(remote_static, bytes) or len(remote_static) != 32:
            raise InternalError("the Noise remote static key is not available")
        try:
            crypto.verify(public, static_signing_message(remote_static), sig)
        except PhaseError:
            raise BadSignature(
                "the peer's handshake signature does not bind its Noise key to the node id "
                "it claims", hint="the peer is not the node it says it is") from None
        node_id = public.hex()
        if self.expected_peer is not None and node_id != self.expected_peer:
            raise UntrustedSigner(
                f"the peer is node {node_id[:16]}…, not the expected {self.expected_peer[:16]}…",
                hint="check the address and node id you dialled", slug="wrong_peer",
                peer_id=node_id)
        return node_id

    def _send(self, msg: bytes | bytearray) -> None:
        if len(msg) > MAX_NOISE_MESSAGE_BYTES:
            raise InternalError(f"Noise message of {len(msg)} bytes is too long")
        self._out += _LEN.pack(len(msg)) + msg

    def _fail(self, err: PhaseError) -> NoReturn:
        self._error = err
        self.state = FAILED
        self._out.clear()
        self._in.clear()
        raise err

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error
