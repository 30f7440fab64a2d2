"""The frame decoder: bytes in, frames out; hostile input raises the right error."""

from __future__ import annotations

import struct

import pytest

from phase_core.errors import InputError, ProtocolViolation, TooLarge
from phase_core.protocol import framing
from phase_core.protocol.framing import (
    BlobData,
    BlobEnd,
    BlobStart,
    Control,
    FrameDecoder,
    FrameTooLarge,
    encode_blob_header,
    encode_control,
)


def decode_all(data: bytes, step: int, **kw: int) -> list[framing.Event]:
    dec = FrameDecoder(**kw)
    out: list[framing.Event] = []
    for i in range(0, len(data), step):
        dec.feed(data[i:i + step])
        out.extend(dec.events())
    dec.feed_eof()
    out.extend(dec.events())
    assert dec.at_boundary
    return out


def merge_blobs(events: list[framing.Event]) -> list[object]:
    """Collapse BlobData runs so that results do not depend on chunking."""
    out: list[object] = []
    for ev in events:
        if isinstance(ev, BlobData) and out and isinstance(out[-1], bytearray):
            out[-1] += ev.data
        elif isinstance(ev, BlobData):
            out.append(bytearray(ev.data))
        else:
            out.append(ev)
    return out


@pytest.mark.parametrize("step", [1, 2, 7, 4096, 1 << 20])
def test_roundtrip_any_chunking(step: int) -> None:
    blob = bytes(range(256)) * 40
    wire = (encode_control({"type": "get", "id": "x", "n": 3})
            + encode_blob_header(len(blob)) + blob
            + encode_blob_header(0)
            + encode_control({"type": "done"}))
    got = merge_blobs(decode_all(wire, step))
    assert got == [Control({"type": "get", "id": "x", "n": 3}), BlobStart(len(blob)),
                   bytearray(blob), BlobEnd(len(blob)), BlobStart(0), BlobEnd(0),
                   Control({"type": "done"})]


def test_header_layout_is_fixed() -> None:
    assert encode_control({"a": 1}) == b"J\x00\x00\x00\x07" + b'{"a":1}'
    assert encode_blob_header(5) == b"B" + struct.pack(">Q", 5)


def test_control_is_canonical_json() -> None:
    assert encode_control({"b": 1, "a": "é"}).endswith('{"a":"é","b":1}'.encode())


def test_oversized_control_header_rejected_before_body() -> None:
    dec = FrameDecoder(max_control_bytes=100)
    dec.feed(b"J" + struct.pack(">I", 101))  # header only: no body needs to arrive
    with pytest.raises(FrameTooLarge) as ei:
        dec.next_event()
    assert isinstance(ei.value, ProtocolViolation) and isinstance(ei.value, TooLarge)
    assert ei.value.exit_code == 76
    with pytest.raises(FrameTooLarge):  # stays failed
        dec.feed(b"more")


def test_oversized_blob_header_rejected() -> None:
    dec = FrameDecoder(max_blob_bytes=1000)
    dec.feed(encode_blob_header(1001))
    with pytest.raises(FrameTooLarge):
        dec.next_event()


@pytest.mark.parametrize("body", [b"not json", b"[1,2]", b'{"a":1.5}', b'{"a":1,"a":2}',
                                  b"\xff\xfe", b""])
def test_garbage_control_body(body: bytes) -> None:
    dec = FrameDecoder()
    dec.feed(b"J" + struct.pack(">I", len(body)) + body)
    with pytest.raises(ProtocolViolation) as ei:
        dec.next_event()
    assert ei.value.slug == "bad_frame"


def test_unknown_kind() -> None:
    dec = FrameDecoder()
    dec.feed(b"GET / HTTP/1.1\r\n")
    with pytest.raises(ProtocolViolation) as ei:
        dec.next_event()
    assert ei.value.slug == "bad_frame"


@pytest.mark.parametrize("cut", [1, 4, 6, 12])
def test_truncated_stream(cut: int) -> None:
    wire = encode_control({"type": "x"}) + encode_blob_header(10) + b"0123456789"
    wire = wire[:len(wire) - cut] if cut < 12 else wire[:-12]
    dec = FrameDecoder()
    dec.feed(wire)
    list(dec.events())
    dec.feed_eof()
    with pytest.raises(ProtocolViolation) as ei:
        list(dec.events())
    assert ei.value.slug == "truncated"


def test_encoder_caps_are_our_fault_not_the_peers() -> None:
    with pytest.raises(TooLarge) as ei:
        encode_control({"pad": "x" * 200}, max_bytes=100)
    assert not isinstance(ei.value, ProtocolViolation)
    with pytest.raises(TooLarge):
        encode_blob_header(11, max_bytes=10)
    with pytest.raises(InputError):
        encode_blob_header(-1)


def test_decoder_cap_bounds() -> None:
    with pytest.raises(InputError):
        FrameDecoder(max_control_bytes=framing.HARD_MAX_CONTROL_BYTES + 1)
