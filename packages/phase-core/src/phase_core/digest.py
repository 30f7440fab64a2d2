"""SHA-256 content ids without loading OpenSSL at start-up when that does not pay.

``import hashlib`` loads OpenSSL's libcrypto: about 2.5 ms of a cold
``plasm-exec run`` (docs/performance.md). Python's built-in ``_sha256`` loads in
a tenth of that but hashes about four times slower (≈4.6 ms/MiB against ≈1.1).
So: once ``hashlib`` is loaded (always, in a long-lived process such as
plasmd), it is used; before that, data up to ``SMALL`` bytes is hashed with
``_sha256``. Both give the same digest: only the speed differs.
``canonical.content_id`` and plasm-exec's run path hash through here.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing's, without importing typing
if TYPE_CHECKING:
    from typing import Any

SMALL = 512 << 10  # ≈ where loading libcrypto costs what the slower hash would


def _sha256(size: int) -> Any:
    if size <= SMALL and "_hashlib" not in sys.modules:
        try:
            from _sha256 import sha256  # type: ignore[import-not-found]
            return sha256
        except ImportError:  # a Python built without its own hashes
            pass
    import hashlib
    return hashlib.sha256


def content_id(data: bytes | memoryview) -> str:
    """``sha256:<hex>`` of ``data``."""
    return "sha256:" + str(_sha256(len(data))(data).hexdigest())


def digest(data: bytes | memoryview) -> bytes:
    """The raw 32-byte SHA-256 of ``data``."""
    return bytes(_sha256(len(data))(data).digest())


class Hasher:
    """Streaming SHA-256 of bytes whose total size is not known in advance.

    Up to ``SMALL`` bytes are kept and hashed at the end (with ``_sha256`` when
    OpenSSL is not loaded); past that the kept bytes go into a ``hashlib``
    hash, which takes the rest as it comes.
    """

    def __init__(self) -> None:
        self._kept: bytearray | None = bytearray()
        self._hash: Any = None

    def update(self, data: bytes | memoryview) -> None:
        if self._hash is not None:
            self._hash.update(data)
            return
        assert self._kept is not None
        self._kept += data
        if len(self._kept) > SMALL:
            import hashlib
            self._hash = hashlib.sha256(self._kept)
            self._kept = None

    def hexdigest(self) -> str:
        if self._hash is not None:
            return str(self._hash.hexdigest())
        assert self._kept is not None
        return str(_sha256(len(self._kept))(self._kept).hexdigest())
