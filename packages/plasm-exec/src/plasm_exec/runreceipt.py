"""``plasm-exec run --receipt``: store the inputs, sign, write the receipt and its manifest.

What is durable when the command returns (docs/plasm-exec.md, "Receipts of run"):
the module and stdin in the content store, then the job manifest and the receipt,
each file whole or absent (temp file, fsync, rename), with the directory that
holds them fsync'd after both renames. The cheap parts:

- an input the store already holds (same content id, same size) is not hashed or
  written again, only marked used, as ``ContentStore.put_bytes`` does for bytes
  it has; the ids come from the run, which hashed module and stdin as it read them;
  a blob that is not there is written by the store, which hashes it as it writes;
- the manifest and the receipt go into one directory, so one directory fsync
  after both renames makes both names durable (two ``write_atomic`` calls made two);
  the manifest is renamed first, so a receipt is never visible without its manifest.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from phase_core import home, log


def write_receipt(path: Path, ex: Any, hm: Path, identity: Any, wasm: bytes, module_id: str,
                  spec: Any, result: Any, stdin_copy: int | None) -> None:
    from phase_core.cas import ContentStore
    from phase_core.signing import document_id
    from phase_core.timefmt import now
    from plasm_exec.receipts import (
        local_manifest,
        manifest_path_for,
        receipt_body,
        sign_receipt,
    )

    cas = ContentStore(home.cas_path(hm))
    _store(cas, module_id, len(wasm), lambda: cas.put_bytes(wasm, expected=module_id))
    if stdin_copy is not None:
        src = Path(f"/proc/self/fd/{stdin_copy}")
        _store(cas, result.stdin_id, os.fstat(stdin_copy).st_size,
               lambda: cas.put_file(src, expected=result.stdin_id))
    t = now()
    menv = local_manifest(module_id=module_id, stdin_id=result.stdin_id, argv=spec.argv,
                          env=spec.env, limits=spec.limits, deterministic=spec.deterministic,
                          created=t, identity=identity)
    job_id = document_id(menv["type"], menv["body"])
    body = receipt_body(job_id=job_id, module_id=module_id, result=result, limits=spec.limits,
                        deterministic=spec.deterministic, runtime=ex.runtime_info,
                        worker=identity.node_id, completed=t)
    write_files([(manifest_path_for(path), _json(menv)),
                 (path, _json(sign_receipt(body, identity)))])
    log.get().info("plasm.run.receipt", path=str(path), job=job_id, worker=identity.node_id)


def _store(cas: Any, cid: str, size: int, put: Callable[[], str]) -> None:
    """Make sure the store holds ``cid``: skip a blob it has (mark it used), else ``put``."""
    blob = cas.path_for(cid)
    try:
        if blob.stat().st_size == size:
            with contextlib.suppress(OSError):
                os.utime(blob)  # a use, for LRU garbage collection
            return
    except FileNotFoundError:
        pass
    put()


def _json(obj: dict[str, Any]) -> bytes:
    from phase_core.canonical import canonical
    return canonical(obj) + b"\n"


def write_files(files: list[tuple[Path, bytes]], mode: int = 0o644) -> None:
    """Write files atomically, in order, with one fsync per directory.

    Each goes to a temp file (created with ``mode``), is fsync'd, and is renamed
    into place in the order given; after the last rename the directory is
    fsync'd once. A reader sees each file whole or not at all; if a write fails,
    no temp file is left and the files not yet renamed keep their old content.
    """
    from phase_core.fsutil import fsync_dir, temp_path
    from phase_core.oserrors import from_oserror

    temps: list[tuple[Path, Path]] = []
    try:
        for path, data in files:
            tmp = temp_path(Path(path))
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                             | os.O_CLOEXEC, mode)
            except OSError as e:
                raise from_oserror(e, path) from None
            temps.append((tmp, Path(path)))
            try:
                os.fchmod(fd, mode)  # the umask may have removed bits we asked for
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except OSError as e:
                raise from_oserror(e, path) from None
            finally:
                os.close(fd)
        for tmp, path in temps:
            try:
                os.replace(tmp, path)
            except OSError as e:
                raise from_oserror(e, path) from None
        for parent in dict.fromkeys(path.parent for _, path in temps):  # one, for run
            try:
                fsync_dir(parent)
            except OSError as e:
                raise from_oserror(e, parent) from None
    finally:
        for tmp, _ in temps:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
