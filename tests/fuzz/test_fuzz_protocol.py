"""Fuzz: frames, job messages and the Noise handshake (bytes and messages from a peer)."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from phase_core import canonical
from phase_core.errors import PhaseError
from phase_core.identity import Identity
from phase_core.protocol import jobs
from phase_core.protocol.framing import (
    KIND_BLOB,
    KIND_CONTROL,
    FrameDecoder,
    encode_control,
)
from phase_core.protocol.noise import Handshake, prologue
from tests.fuzz.strategies import JSON_OBJECTS, clean, mutated, vector

MESSAGE_TYPES = sorted(jobs.MESSAGES)

# -- framing -----------------------------------------------------------------------
FRAME_BYTES = st.one_of(
    st.binary(max_size=200),
    st.builds(lambda obj, cut: encode_control(obj)[:cut] if cut else encode_control(obj),
              JSON_OBJECTS.filter(lambda o: not isinstance(clean(canonical.canonical, o),
                                                           PhaseError)),
              st.integers(0, 40)),
    st.builds(lambda n, body: bytes([KIND_CONTROL]) + n.to_bytes(4, "big") + body,
              st.integers(0, 2**32 - 1), st.binary(max_size=40)),
    st.builds(lambda n, body: bytes([KIND_BLOB]) + n.to_bytes(8, "big") + body,
              st.integers(0, 2**64 - 1), st.binary(max_size=40)))


def _drain(dec: FrameDecoder, chunks: list[bytes], eof: bool) -> None:
    for c in chunks:
        dec.feed(c)
        list(dec.events())
    if eof:
        dec.feed_eof()
        list(dec.events())


@given(st.lists(FRAME_BYTES, max_size=4), st.booleans(), st.integers(1, 64))
def test_frame_decoder(parts, eof, step):
    data = b"".join(parts)
    chunks = [data[i:i + step] for i in range(0, len(data), step)]
    dec = FrameDecoder(max_control_bytes=1024, max_blob_bytes=1 << 16)
    clean(_drain, dec, chunks, eof)


# -- job-exchange messages -------------------------------------------------------------
EXAMPLES = {
    "offer": {"type": "offer", "job": "sha256:" + "1" * 64, "module": "sha256:" + "2" * 64,
              "module_bytes": 10, "stdin": None, "stdin_bytes": 0, "requirements": {},
              "limits": {"fuel": 1, "memory_bytes": 65536, "output_bytes": 1, "wall_ms": 1}},
    "run": {"type": "run", "manifest": vector("valid/job_manifest.json")},
    "result": {"type": "result", "job": "sha256:" + "1" * 64,
               "receipt": vector("valid/receipt.json")},
    "get": {"type": "get", "id": "sha256:" + "1" * 64, "offset": 0},
    "node_record": {"type": "node_record", "record": vector("valid/node_record.json")},
}


@given(st.one_of(JSON_OBJECTS, st.none()), st.lists(st.sampled_from(MESSAGE_TYPES),
                                                     min_size=1, max_size=3))
def test_job_message_any_object(msg, expected):
    clean(jobs.check, msg, *expected)


@given(st.sampled_from(sorted(EXAMPLES)).flatmap(
    lambda t: st.tuples(st.just(t), mutated(EXAMPLES[t]))))
def test_job_message_mutated(arg):
    t, msg = arg
    assert jobs.check(EXAMPLES[t], t)
    if isinstance(msg, dict):
        clean(jobs.check, msg, t)


# -- the Noise handshake -----------------------------------------------------------------
ALICE = Identity(hashlib.sha256(b"fuzz-alice").digest())
BOB = Identity(hashlib.sha256(b"fuzz-bob").digest())
PROLOGUE = prologue(b"initiator cert", b"responder cert")


def _framed(msgs: list[bytes]) -> bytes:
    return b"".join(len(m).to_bytes(2, "big") + m for m in msgs)


def _feed(hs: Handshake, data: bytes, step: int, eof: bool) -> None:
    for i in range(0, len(data), step):
        hs.receive_data(data[i:i + step])
        hs.data_to_send()
    if eof:
        hs.receive_eof()


NOISE_INPUT = st.one_of(
    st.binary(max_size=400),
    st.lists(st.binary(max_size=250), max_size=3).map(_framed))


@given(NOISE_INPUT, st.integers(1, 200), st.booleans())
def test_noise_responder_garbage(data, step, eof):
    hs = Handshake(initiator=False, identity=BOB, prologue=PROLOGUE)
    clean(_feed, hs, data, step, eof)


@given(NOISE_INPUT, st.integers(1, 200), st.booleans())
def test_noise_initiator_garbage(data, step, eof):
    hs = Handshake(initiator=True, identity=ALICE, prologue=PROLOGUE)
    hs.data_to_send()
    clean(_feed, hs, data, step, eof)


@given(NOISE_INPUT, st.integers(1, 200))
def test_noise_responder_garbage_after_a_real_first_message(data, step):
    """A genuine msg1 gets the responder to its second state; then garbage as msg3."""
    alice = Handshake(initiator=True, identity=ALICE, prologue=PROLOGUE)
    bob = Handshake(initiator=False, identity=BOB, prologue=PROLOGUE)
    bob.receive_data(alice.data_to_send())
    assert bob.data_to_send()
    clean(_feed, bob, data, step, False)


@given(NOISE_INPUT, st.integers(1, 200))
def test_noise_initiator_garbage_after_a_real_second_message(data, step):
    alice = Handshake(initiator=True, identity=ALICE, prologue=PROLOGUE)
    bob = Handshake(initiator=False, identity=BOB, prologue=PROLOGUE)
    bob.receive_data(alice.data_to_send())
    alice.receive_data(bob.data_to_send())
    assert alice.data_to_send()  # msg3; now waiting for the confirmation
    clean(_feed, alice, data, step, False)
