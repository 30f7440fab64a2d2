"""The dispatcher's input and output records (docs/dispatch.md, docs/pipeline.md).

Input: JSON lines of ``job`` records, bare signed job manifests or phase-verify's
``verified`` job manifests (as ``plasmd submit --jobs``), read on a daemon
thread one record per credit (``Reader``): the dispatcher asks for the next job
only when it can place it, so the input is read only as fast as work is placed.
Module and stdin bytes are read once per content id while in use (``BlobCache``).

Every input line that is (or should have been) a job gets an ``index``: its
position among those lines, from 0. A line that cannot be read or is not a
valid job takes its index too and gets an ``error`` record naming it.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from phase_core.cli.pipeline import Stage
from phase_core.errors import DigestMismatch, InputError, MissingInput, PhaseError
from plasmd.pool import Job
from plasmd.submit import Outcome

Item = tuple[int, Job | PhaseError]  # (input line, the job or what is wrong with it)


def read_blob(cid: str | None, path: Path | None, cas: Any) -> dict[str, bytes]:
    """A job's module or stdin bytes by content id: from ``path`` (checked against
    ``cid``), else from the store ``cas`` (None: no store)."""
    from phase_core.canonical import content_id

    if cid is None:
        return {}
    if path is not None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise MissingInput(f"no such file: {path}") from None
        except OSError as e:
            raise InputError(f"cannot read {path}: {e.strerror}") from None
        if content_id(data) != cid:
            raise DigestMismatch(f"{path} is not {cid}, which the manifest names")
        return {cid: data}
    if cas is None or not cas.has(cid):
        raise MissingInput(f"{cid} is not in the store and the record gives no path",
                           hint="add module_path/stdin_path, or put it in the store "
                                "(phase-fetch)")
    return {cid: cas.path_for(cid).read_bytes()}


class BlobCache:
    """Module and stdin bytes by content id, the most recent ``max_bytes`` of them.

    A file a record names is checked against its id once per file identity (device,
    inode, size, mtime): a record naming another file, or the same file changed, is
    read and checked again, so a wrong file is reported even when the right bytes are
    cached."""

    MAX_FILES = 4096

    def __init__(self, cas: Any, max_bytes: int = 64 << 20) -> None:
        self.cas = cas
        self.max_bytes = max_bytes
        self._bytes: collections.OrderedDict[str, bytes] = collections.OrderedDict()
        self._size = 0
        self._checked: dict[tuple[str, str], tuple[int, int, int, int]] = {}

    def _known_file(self, cid: str, path: Path) -> tuple[int, int, int, int] | None:
        """The file's identity, if it was checked against ``cid`` and is unchanged."""
        try:
            st = os.stat(path)
        except OSError:
            return None
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        return key if self._checked.get((cid, str(path))) == key else None

    def get(self, cid: str | None, path: Path | None) -> dict[str, bytes]:
        if cid is None:
            return {}
        data = self._bytes.get(cid)
        if data is not None and (path is None or self._known_file(cid, path)):
            self._bytes.move_to_end(cid)
            return {cid: data}
        data = read_blob(cid, path, self.cas)[cid]
        if path is not None:
            with contextlib.suppress(OSError):
                st = os.stat(path)
                if len(self._checked) >= self.MAX_FILES:
                    self._checked.clear()
                self._checked[(cid, str(path))] = (st.st_dev, st.st_ino, st.st_size,
                                                   st.st_mtime_ns)
        if cid in self._bytes:
            self._bytes.move_to_end(cid)
            return {cid: self._bytes[cid]}
        self._bytes[cid] = data
        self._size += len(data)
        while self._size > self.max_bytes and len(self._bytes) > 1:
            _, old = self._bytes.popitem(last=False)
            self._size -= len(old)
        return {cid: data}


def read_jobs(stage: Stage, src: IO[bytes], blobs: BlobCache) -> Iterator[Item]:
    """The input's jobs, each read and checked, or the error of its line."""
    from plasm_exec.jobpipe import job_of

    for lineno, rec in stage.read(src):
        if isinstance(rec, PhaseError):
            yield lineno, rec
            continue
        try:
            env, module_path, stdin_path = job_of(rec)
            if not isinstance(env, dict) or not isinstance(env.get("body"), dict):
                raise InputError("the record has no signed job manifest")
            body = env["body"]
            yield lineno, Job(env, {**blobs.get(body.get("module"), module_path),
                                    **blobs.get(body.get("stdin"), stdin_path)})
        except PhaseError as e:
            yield lineno, e
        except (KeyError, TypeError, ValueError) as e:
            yield lineno, InputError(f"not a job manifest: {e!r}"[:200])


class Reader:
    """Items of an iterator, read on a daemon thread, one per ``next()`` call.

    The thread reads an item only after it was asked for one, so nothing is read
    ahead of the caller; being a daemon thread, a read blocked on a quiet stdin
    never holds up the process's exit (Ctrl-C)."""

    def __init__(self, items: Iterator[Item]) -> None:
        self._items = items
        self._loop = asyncio.get_running_loop()
        self._credit = threading.Semaphore(0)
        self._got: asyncio.Queue[Item | BaseException | None] = asyncio.Queue()
        self.read = 0  # items handed out
        threading.Thread(target=self._run, name="jobs-input", daemon=True).start()

    def _run(self) -> None:
        try:
            while True:
                self._credit.acquire()
                item = next(self._items, None)
                if not self._post(item) or item is None:
                    return
        except BaseException as e:
            self._post(e)

    def _post(self, x: Item | BaseException | None) -> bool:
        try:
            self._loop.call_soon_threadsafe(self._got.put_nowait, x)
            return True
        except RuntimeError:  # the loop is closed: the dispatch is over
            return False

    async def next(self) -> Item | None:
        self._credit.release()
        got = await self._got.get()
        if isinstance(got, BaseException):
            raise got
        if got is not None:
            self.read += 1
        return got


def job_result(out: Outcome, index: int, line: int, attempts: int) -> dict[str, Any]:
    """A ``job_result`` record (as ``plasmd submit --jobs``) with its input position."""
    b = out.body
    return {"v": 1, "type": "job_result", "index": index, "line": line, "worker": out.worker,
            "job": b["job"], "ended": b["ended"], "exit_code": b["exit_code"],
            "stdout_id": b["stdout"], "stderr_id": b["stderr"],
            "stdout_bytes": b["stdout_bytes"], "stderr_bytes": b["stderr_bytes"],
            "stdout_b64": base64.b64encode(out.stdout).decode(),
            "stderr_b64": base64.b64encode(out.stderr).decode(),
            "attempts": attempts, "envelope": out.receipt}


def receipt_summary(out: Outcome) -> dict[str, Any]:
    b = out.body
    return {"worker": out.worker, "ended": b["ended"], "exit_code": b["exit_code"],
            "stdout_id": b["stdout"], "stderr_id": b["stderr"],
            "stdout_b64": base64.b64encode(out.stdout[:65536]).decode(),
            "envelope": out.receipt}
