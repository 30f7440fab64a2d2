"""Where blobs come from: the ``Source`` interface and the local-directory source.

A source streams one blob into a ``Sink``; the fetcher checks the digest and
commits. Order (fixed by the fetcher): the CAS → local directories → HTTP(S)
mirrors → peers. A peer source over the QUIC transport implements the same
protocol: ``name`` and ``fetch(want, sink)``.

What a source may raise (and what the fetcher does next):

- ``Unavailable``: this source does not have the blob → next source.
- ``TempFailure`` / ``Timeout``: transient failure, after the source's own
  retries → next source (the partial bytes stay for a resume).
- ``DigestMismatch`` (any slug): the source served bytes that are not the blob
  → logged, the bytes are discarded, next source.
- ``ProtocolViolation``: the source broke its protocol → next source.

A source resumes by reading ``sink.offset`` and writing only the bytes after
it; a source that cannot resume calls ``sink.restart()`` first.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from phase_core import log
from phase_core.canonical import content_hex
from phase_core.cas import CHUNK
from phase_core.errors import DigestMismatch, IOFailure, Unavailable
from phase_fetch.want import Want


class Sink(Protocol):
    expected_size: int | None
    announced_size: int | None  # what the source says the blob's size is (progress only)
    max_bytes: int

    @property
    def offset(self) -> int: ...

    def write(self, data: bytes | memoryview) -> None: ...

    def restart(self) -> None: ...

    def check(self) -> None: ...


class Source(Protocol):
    name: str

    def fetch(self, want: Want, sink: Sink) -> None: ...


class DirSource:
    """Blobs in a local directory, looked up as (in order)::

        <dir>/sha256/<2 hex>/<62 hex>   (another content store)
        <dir>/sha256/<64 hex>
        <dir>/<64 hex>
        <dir>/<name>                    (when the request names the blob)

    Every candidate is hashed while it is copied; a wrong one is logged as a
    digest mismatch and the next candidate is tried.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.name = f"dir:{self.root}"

    def candidates(self, want: Want) -> Sequence[Path]:
        h = content_hex(want.id)
        out = [self.root / "sha256" / h[:2] / h[2:], self.root / "sha256" / h, self.root / h]
        if want.name is not None:
            out.append(self.root / want.name)
        return out

    def fetch(self, want: Want, sink: Sink) -> None:
        found = 0
        last: DigestMismatch | None = None
        for path in self.candidates(want):
            if not path.is_file():
                continue
            found += 1
            try:
                size = path.stat().st_size
                if want.size is not None and size != want.size:
                    raise DigestMismatch(f"{path} is {size} bytes, expected {want.size}",
                                         slug="size_mismatch")
                sink.restart()
                with open(path, "rb", buffering=0) as f:
                    buf = bytearray(CHUNK)
                    view = memoryview(buf)
                    while n := f.readinto(view):
                        sink.write(view[:n])
                sink.check()
                return
            except DigestMismatch as e:
                last = e
                log.get().warning("fetch.digest_mismatch", id=want.id, source=self.name,
                                  file=str(path), error=e.slug, message=e.message)
                sink.restart()
            except OSError as e:
                raise IOFailure(f"cannot read {path}: {e.strerror}") from None
        if last is not None:
            raise last
        raise Unavailable(f"{want.id} is not in {self.root}", slug="not_found")


def exists_dir(path: str) -> Path:
    p = Path(path)
    if not p.is_dir():
        from phase_core.errors import MissingInput
        raise MissingInput(f"--from-dir {path!r} is not a directory")
    return p


__all__ = ["DirSource", "Sink", "Source", "exists_dir"]
