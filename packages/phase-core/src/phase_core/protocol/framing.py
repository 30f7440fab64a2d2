"""Length-prefixed frames on a transport stream (sans-I/O).

A stream carries a sequence of frames. Each starts with a one-byte kind:

``J`` (0x4A) control frame::

    0x4A  length:u32be  body[length]

    ``body`` is one JSON object, canonical JSON encoded as UTF-8
    (``phase_core.canonical``). ``length`` is capped by the receiver
    (default 64 KiB, never more than 1 MiB); the cap is checked on the
    5-byte header, before any of the body is buffered.

``B`` (0x42) blob::

    0x42  size:u64be  data[size]

    ``size`` raw bytes follow the 9-byte header with no further framing.
    The receiver caps ``size`` (default 1 GiB) on the header, so it can refuse
    a blob before any of it arrives. What the blob *is* (its content id) is
    said by the control frame before it.

Any other first byte, a control body that is not a canonical-JSON object, a
length over the cap, or a stream that ends inside a frame is the peer's fault:
``ProtocolViolation`` (``FrameTooLarge``, a subclass that is also a
``TooLarge``, for sizes). After an error the decoder stays failed.

Encoding a frame bigger than our own cap raises plain ``TooLarge``: that is
the caller's bug, not the peer's.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from phase_core import canonical
from phase_core.errors import InputError, ProtocolViolation, TooLarge

KIND_CONTROL = 0x4A  # "J"
KIND_BLOB = 0x42  # "B"

_CONTROL_HEADER = struct.Struct(">BI")
_BLOB_HEADER = struct.Struct(">BQ")
CONTROL_HEADER_BYTES = _CONTROL_HEADER.size  # 5
BLOB_HEADER_BYTES = _BLOB_HEADER.size  # 9

DEFAULT_MAX_CONTROL_BYTES = 64 << 10
HARD_MAX_CONTROL_BYTES = 1 << 20
DEFAULT_MAX_BLOB_BYTES = 1 << 30
HARD_MAX_BLOB_BYTES = 1 << 40


class FrameTooLarge(ProtocolViolation, TooLarge):
    """The peer announced a frame over our cap (exit 76, like every protocol violation)."""

    slug = "frame_too_large"
    exit_code = ProtocolViolation.exit_code


@dataclass(frozen=True, slots=True)
class Control:
    """A control frame: one JSON object."""

    message: dict[str, Any]


@dataclass(frozen=True, slots=True)
class BlobStart:
    """A blob header: ``size`` raw bytes follow as ``BlobData`` events, then ``BlobEnd``."""

    size: int


@dataclass(frozen=True, slots=True)
class BlobData:
    data: bytes


@dataclass(frozen=True, slots=True)
class BlobEnd:
    size: int


Event = Control | BlobStart | BlobData | BlobEnd


def encode_control(message: Mapping[str, Any], *,
                   max_bytes: int = DEFAULT_MAX_CONTROL_BYTES) -> bytes:
    """The wire bytes of one control frame; ``TooLarge`` past ``max_bytes``."""
    if not isinstance(message, Mapping):
        raise InputError("a control frame must be a JSON object")
    body = canonical.canonical(dict(message))
    if len(body) > min(max_bytes, HARD_MAX_CONTROL_BYTES):
        raise TooLarge(f"control frame is {len(body)} bytes, over the cap of {max_bytes}",
                       hint="send bulk data as a blob after a small control frame")
    return _CONTROL_HEADER.pack(KIND_CONTROL, len(body)) + body


def encode_blob_header(size: int, *, max_bytes: int = HARD_MAX_BLOB_BYTES) -> bytes:
    """The 9-byte header announcing a blob of ``size`` bytes."""
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InputError(f"blob size {size!r} is not a non-negative integer")
    if size > min(max_bytes, HARD_MAX_BLOB_BYTES):
        raise TooLarge(f"blob is {size} bytes, over the cap of {max_bytes}")
    return _BLOB_HEADER.pack(KIND_BLOB, size)


class FrameDecoder:
    """Bytes in (``feed``), frames out (``next_event`` / ``events``)."""

    def __init__(self, *, max_control_bytes: int = DEFAULT_MAX_CONTROL_BYTES,
                 max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES) -> None:
        if not 0 < max_control_bytes <= HARD_MAX_CONTROL_BYTES:
            raise InputError(f"max_control_bytes must be in 1..{HARD_MAX_CONTROL_BYTES}")
        if not 0 <= max_blob_bytes <= HARD_MAX_BLOB_BYTES:
            raise InputError(f"max_blob_bytes must be in 0..{HARD_MAX_BLOB_BYTES}")
        self.max_control_bytes = max_control_bytes
        self.max_blob_bytes = max_blob_bytes
        self._buf = bytearray()
        self._blob_size = 0
        self._blob_left: int | None = None  # not None while inside a blob
        self._error: ProtocolViolation | None = None
        self._eof = False

    @property
    def at_boundary(self) -> bool:
        """True when no partial frame is buffered (a clean place for the stream to end)."""
        return not self._buf and self._blob_left is None

    @property
    def in_blob(self) -> bool:
        return self._blob_left is not None

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        self._raise_if_failed()
        if self._eof:
            self._fail(ProtocolViolation("data after the end of the stream"))
        self._buf += data

    def feed_eof(self) -> None:
        """The stream ended. Drain ``events()`` next: it raises if the end cut a frame."""
        self._raise_if_failed()
        self._eof = True

    def events(self) -> Iterator[Event]:
        """Every complete event buffered so far."""
        while (ev := self.next_event()) is not None:
            yield ev

    def next_event(self) -> Event | None:
        self._raise_if_failed()
        if self._blob_left is not None:
            return self._blob_event()
        buf = self._buf
        if not buf:
            return None
        kind = buf[0]
        if kind == KIND_CONTROL:
            return self._control_event()
        if kind == KIND_BLOB:
            if len(buf) < BLOB_HEADER_BYTES:
                return self._need_more()  # None, or raises at EOF
            _, size = _BLOB_HEADER.unpack_from(buf)
            if size > self.max_blob_bytes:
                self._fail(FrameTooLarge(
                    f"peer announced a {size}-byte blob, over the cap of "
                    f"{self.max_blob_bytes}"))
            del buf[:BLOB_HEADER_BYTES]
            self._blob_size = size
            self._blob_left = size
            return BlobStart(size)
        self._fail(ProtocolViolation(f"unknown frame kind 0x{kind:02x}", slug="bad_frame"))

    def _control_event(self) -> Event | None:
        buf = self._buf
        if len(buf) < CONTROL_HEADER_BYTES:
            return self._need_more()  # None, or raises at EOF
        _, length = _CONTROL_HEADER.unpack_from(buf)
        if length > self.max_control_bytes:
            self._fail(FrameTooLarge(
                f"peer announced a {length}-byte control frame, over the cap of "
                f"{self.max_control_bytes}"))
        end = CONTROL_HEADER_BYTES + length
        if len(buf) < end:
            return self._need_more()  # None, or raises at EOF
        body = bytes(buf[CONTROL_HEADER_BYTES:end])
        del buf[:end]
        try:
            message = canonical.parse(body, max_bytes=self.max_control_bytes)
        except InputError as e:
            self._fail(ProtocolViolation(f"control frame is not valid JSON: {e.message}",
                                         slug="bad_frame"))
        if not isinstance(message, dict):
            self._fail(ProtocolViolation("control frame is not a JSON object",
                                         slug="bad_frame"))
        return Control(message)

    def _blob_event(self) -> Event | None:
        left = self._blob_left
        assert left is not None
        if left == 0:
            self._blob_left = None
            return BlobEnd(self._blob_size)
        buf = self._buf
        if not buf:
            if self._eof:
                self._fail(ProtocolViolation(
                    f"stream ended inside a blob, {left} of {self._blob_size} bytes missing",
                    slug="truncated"))
            return None
        n = min(left, len(buf))
        if n == len(buf):
            data = bytes(buf)
            buf.clear()
        else:
            data = bytes(buf[:n])
            del buf[:n]
        self._blob_left = left - n
        return BlobData(data)

    def _need_more(self) -> Event | None:
        if self._eof:
            self._fail(ProtocolViolation("stream ended inside a frame", slug="truncated"))
        return None

    def _fail(self, err: ProtocolViolation) -> NoReturn:
        self._error = err
        self._buf.clear()
        raise err

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error
