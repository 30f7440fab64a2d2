"""CAS housekeeping: ``phase-fetch cas size | list | verify | gc <max-bytes>``.

It lives in phase-fetch because phase-fetch is the tool that fills the store.
``gc`` deletes least recently used blobs (a cache hit refreshes a blob's
mtime) until the store fits, and sweeps partial downloads and temp files
(``sink.sweep``: a day old, over the count or size bound, or left by a dead
fetch; a file another process holds locked is kept).
"""

from __future__ import annotations

import contextlib
from typing import IO, Any

from phase_core import exitcodes
from phase_core.canonical import check_content_id
from phase_core.cas import ContentStore
from phase_core.cli.jsonl import write_record
from phase_core.errors import DigestMismatch, InputError, MissingInput
from phase_fetch.sink import PARTIAL_DIR, sweep


def main(args: dict[str, Any], store: ContentStore, out: IO[str] | None) -> int:
    def emit(rec: dict[str, Any]) -> None:
        if out is not None:
            write_record(rec, out)

    if args["size"]:
        entries = list(store.list())
        emit({"v": 1, "type": "cas_size", "path": str(store.root), "blobs": len(entries),
              "size_bytes": sum(sz for _, sz in entries),
              "partial_bytes": partial_bytes(store)})
        return exitcodes.OK
    if args["list"]:
        for cid, sz in store.list():
            emit({"v": 1, "type": "cas_entry", "id": cid, "size_bytes": sz,
                  "path": str(store.path_for(cid))})
        return exitcodes.OK
    if args["verify"]:
        ids = [check_content_id(i) for i in args["<id>"]] or [c for c, _ in store.list()]
        code = exitcodes.OK
        for cid in ids:
            try:
                store.verify(cid)
                emit({"v": 1, "type": "cas_verified", "id": cid, "ok": True})
            except (DigestMismatch, MissingInput) as e:
                code = exitcodes.worst(code, e.exit_code)
                emit({"v": 1, "type": "cas_verified", "id": cid, "ok": False,
                      "error": e.slug, "message": e.message})
        return code
    if args["gc"]:
        try:
            limit = int(args["<max-bytes>"])
        except ValueError:
            raise InputError(f"gc limit {args['<max-bytes>']!r} is not a number of bytes"
                             ) from None
        stale = remove_stale_partials(store)
        removed = store.gc(limit)
        emit({"v": 1, "type": "cas_gc", "removed": removed, "removed_partials": stale,
              "size_bytes": store.size()})
        return exitcodes.OK
    raise AssertionError("docopt allowed an unknown cas command")


def partial_bytes(store: ContentStore) -> int:
    total = 0
    d = store.root / PARTIAL_DIR
    if d.is_dir():
        for p in d.iterdir():
            with contextlib.suppress(FileNotFoundError):
                total += p.stat().st_size
    return total


def remove_stale_partials(store: ContentStore) -> int:
    """Partials and temp files removed by ``sink.sweep`` (age, count and size bounds)."""
    done = sweep(store)
    return done.partials + done.temps
