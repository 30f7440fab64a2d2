"""The fetcher: sources in order, verification, dedupe, bounded concurrency.

Order per blob: the CAS (re-hashed on read; a corrupt blob is quarantined and
fetched again) → local directories → the fetcher's mirrors (--mirror) → the
request's own mirrors → peers. The first source whose bytes hash to the id wins. The same
content id asked for twice (at once or later) is fetched once per ``Fetcher``.

When every source fails, the blob's error is chosen by what a retry could do:
``Timeout``/``TempFailure`` (75) if any source failed transiently, else
``DigestMismatch`` (1) if any source served wrong bytes, else ``Unavailable``
(69): no source had it.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from phase_core import log
from phase_core.cas import ContentStore
from phase_core.errors import (
    DigestMismatch,
    IOFailure,
    MissingInput,
    PhaseError,
    ProtocolViolation,
    Rejected,
    TempFailure,
    Timeout,
    Unavailable,
)
from phase_core.protocol.socks5 import ProxyError
from phase_fetch.mirror import HttpMirror, HttpOptions
from phase_fetch.sink import PartialWriter, sweep
from phase_fetch.sources import DirSource, Source
from phase_fetch.want import Fetched, Want, check_mirror


@dataclass(frozen=True)
class Options(HttpOptions):
    max_bytes: int | None = None  # cap when the size is unknown (default: the store's cap)
    jobs: int = 4
    resume: bool = True

    def http(self) -> HttpOptions:
        return HttpOptions(**{f.name: getattr(self, f.name) for f in fields(HttpOptions)})


class Fetcher:
    """Fetch blobs into ``store``. Thread-safe; use as a context manager (or ``close()``)."""

    def __init__(self, store: ContentStore, *, mirrors: Sequence[str] = (),
                 local_dirs: Sequence[Path] = (), peers: Sequence[Source] = (),
                 options: Options | None = None, rng: random.Random | None = None,
                 sweep_store: bool = True) -> None:
        """``sweep_store``: first clear what earlier (or killed) runs left in the
        store's partial/ and tmp/; a long-lived owner of the store (plasmd) does that
        once at start instead of per fetch."""
        self.store = store
        self.options = options or Options()
        self.mirrors = tuple(check_mirror(m) for m in mirrors)
        self.local: tuple[Source, ...] = tuple(DirSource(Path(d)) for d in local_dirs)
        self.peers = tuple(peers)
        self.cancel = threading.Event()
        self._rng = rng or random.Random()  # noqa: S311 - jitter only
        self._lock = threading.Lock()
        self._memo: dict[str, Future[Fetched]] = {}
        self._pool = ThreadPoolExecutor(max_workers=max(1, self.options.jobs),
                                        thread_name_prefix="phase-fetch")
        self.active: dict[str, PartialWriter] = {}  # for progress display
        if sweep_store:
            sweep_leftovers(store)

    # -- public API ---------------------------------------------------------------------
    def submit(self, want: Want) -> Future[Fetched]:
        """A future for ``want``; the same id shares one future (fetched once)."""
        with self._lock:
            fut = self._memo.get(want.id)
            if fut is None:
                fut = self._pool.submit(self._fetch_one, want)
                self._memo[want.id] = fut
            return fut

    def fetch(self, want: Want) -> Fetched:
        """Fetch one blob (or raise the ``PhaseError`` that says why not)."""
        return self.submit(want).result()

    def fetch_all(self, wants: Iterable[Want]) -> list[Fetched | PhaseError]:
        """Fetch many in parallel (bounded by ``options.jobs``); results in input order."""
        futs = [self.submit(w) for w in wants]
        out: list[Fetched | PhaseError] = []
        for f in futs:
            try:
                out.append(f.result())
            except PhaseError as e:
                out.append(e)
        return out

    def sources_for(self, want: Want) -> list[Source]:
        http = self.options.http()
        mirrors = list(dict.fromkeys((*self.mirrors, *want.mirrors)))
        return [*self.local,
                *(HttpMirror(m, http, rng=self._rng, cancel=self.cancel) for m in mirrors),
                *self.peers]

    def close(self) -> None:
        self.cancel.set()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one blob -----------------------------------------------------------------------
    def _from_cache(self, want: Want) -> Fetched | None:
        if not self.store.has(want.id):
            return None
        try:
            path = self.store.verify(want.id)
        except DigestMismatch as e:  # quarantined by the store; fetch it again
            log.get().warning("fetch.cache_corrupt", id=want.id, message=e.message)
            return None
        except MissingInput:
            return None
        size = path.stat().st_size
        if want.size is not None and size != want.size:
            raise DigestMismatch(f"{want.id} is {size} bytes, but the request says "
                                 f"{want.size}", slug="size_mismatch",
                                 hint="the record that names this blob gives a wrong size")
        log.get().info("fetch.done", id=want.id, source="cas", size_bytes=size)
        return Fetched(want.id, size, path, "cas")

    def _fetch_one(self, want: Want) -> Fetched:
        hit = self._from_cache(want)
        if hit is not None:
            return hit
        sources = self.sources_for(want)
        if not sources:
            raise Unavailable(f"{want.id} is not in the store at {self.store.root} and no "
                              "source was given", slug="no_source",
                              hint="pass --mirror=<url> or --from-dir=<dir>", id=want.id)
        cap = self.options.max_bytes or self.store.max_blob_bytes
        errors: list[tuple[str, PhaseError]] = []
        with PartialWriter(self.store, want.id, want.size, cap,
                           resumable=self.options.resume) as sink:
            hit = self._from_cache(want)  # another process may have finished it meanwhile
            if hit is not None:
                return hit
            self.active[want.id] = sink
            try:
                for src in sources:
                    if self.cancel.is_set():
                        raise TempFailure("cancelled", slug="cancelled", id=want.id)
                    got = self._try_source(src, want, sink, errors)
                    if got is not None:
                        return got
            finally:
                self.active.pop(want.id, None)
        raise _combine(want, errors)

    def _try_source(self, src: Source, want: Want, sink: PartialWriter,
                    errors: list[tuple[str, PhaseError]]) -> Fetched | None:
        logger = log.get()
        for fresh in (False, True):
            sink.begin_source()
            resumed = sink.inherited
            logger.info("fetch.try", id=want.id, source=src.name, offset_bytes=resumed)
            try:
                src.fetch(want, sink)
                path = sink.commit()
            except ProxyError:
                raise  # not this source's fault: the next one would meet the same proxy
            except DigestMismatch as e:
                sink.restart()
                if resumed and not fresh:
                    logger.warning("fetch.resume_mismatch", id=want.id, source=src.name,
                                   resumed_bytes=resumed, error=e.slug,
                                   message="resumed bytes did not verify; starting again "
                                           "from zero")
                    continue
                logger.warning("fetch.digest_mismatch", id=want.id, source=src.name,
                               error=e.slug, message=e.message)
                errors.append((src.name, e))
                return None
            except (Unavailable, TempFailure, ProtocolViolation, Rejected) as e:
                logger.warning("fetch.source_failed", id=want.id, source=src.name,
                               error=e.slug, message=e.message, offset_bytes=sink.offset)
                errors.append((src.name, e))
                return None
            except IOFailure:
                raise
            logger.info("fetch.done", id=want.id, source=src.name, size_bytes=sink.size,
                        resumed_bytes=resumed)
            return Fetched(want.id, sink.size, path, src.name)
        return None


def _combine(want: Want, errors: list[tuple[str, PhaseError]]) -> PhaseError:
    tried = ", ".join(f"{name}: {e.slug}" for name, e in errors)
    details: dict[str, Any] = {
        "id": want.id, "sources": [{"source": n, "error": e.slug} for n, e in errors]}
    if any(isinstance(e, TempFailure) for _, e in errors):
        cls: type[PhaseError] = (Timeout if any(isinstance(e, Timeout) for _, e in errors)
                                 else TempFailure)
        return cls(f"could not fetch {want.id} ({tried})", hint="a retry may help", **details)
    if any(isinstance(e, DigestMismatch | ProtocolViolation) for _, e in errors):
        return DigestMismatch(f"no source served the right bytes for {want.id} ({tried})",
                              hint="the mirrors serve different bytes under this id; check "
                                   "the manifest or try other mirrors", **details)
    return Unavailable(f"no source has {want.id} ({tried})", hint="try other mirrors",
                       **details)


def sweep_leftovers(store: ContentStore) -> None:
    """Remove what earlier (or killed) runs left in partial/ and tmp/; never fatal."""
    try:
        sweep(store)
    except OSError as e:
        log.get().warning("fetch.sweep_failed", message=str(e)[:200])
