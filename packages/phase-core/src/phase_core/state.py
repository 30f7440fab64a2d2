"""The rollback state store: high-water marks and seen job ids, updated atomically.

Two files, each updated under a flock:
- ``state.json`` holds the ``marks``: for each ``boot/<channel>/<arch>``, the
  newest boot-manifest version accepted and its document id (rewritten
  atomically: temp + fsync + rename);
- ``state.json.jobs`` is an append-only journal of accepted jobs, one line
  ``{"s": submitter, "j": job id, "e": expiry}`` each, durable (fdatasync'd)
  before ``record_job`` returns (concurrent appends share one fdatasync: group
  commit, ``phase_core.groupsync``), so a replayed ``run`` is refused, also
  after a restart. ``begin_record_job`` refuses a replay at once and lets the
  caller go on while the line is flushed (``Durable.wait`` for it). An in-memory
  index mirrors it; entries leave when their manifest expires, and the journal
  is compacted when most of it has expired. Manifests whose lifetime exceeds
  ``MAX_JOB_LIFETIME_S`` are refused, which bounds memory.

Callers verify first and record after: a rejected document never moves a mark.
``StateStore(None)`` keeps everything in memory (private mode).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from phase_core.documents import Mark
from phase_core.errors import ConfigError, IOFailure, PhaseError, Replay, Rollback, TempFailure
from phase_core.fsutil import fsync_dir, locked, make_dirs, open_nofollow, write_atomic
from phase_core.groupsync import GroupSync
from phase_core.oserrors import from_oserror, fs_errors

MAX_STATE_BYTES = 64 << 20
MAX_JOBS_PER_SUBMITTER = 1_000_000
MAX_JOURNAL_LINE = 512
MAX_JOB_LIFETIME_S = 7 * 24 * 3600
T = TypeVar("T")


class Durable:
    """A journal write on its way to disk (``StateStore.begin_record_job``)."""

    DONE: Durable

    def __init__(self) -> None:
        self._done = threading.Event()
        self._failure: IOFailure | None = None
        self._lock = threading.Lock()
        self._then: list[Callable[[IOFailure | None], object]] = []

    def finish(self, failure: IOFailure | None) -> None:
        with self._lock:
            self._failure = failure
            self._done.set()
            then, self._then = self._then, []
        for fn in then:
            try:
                fn(failure)
            except Exception as e:  # a caller's bug must not keep the others waiting
                from phase_core import log
                log.get().error("state.durable_callback_failed", error=repr(e))

    def then(self, fn: Callable[[IOFailure | None], object]) -> None:
        """Call ``fn(None)`` once the write is durable (``fn(IOFailure)`` if its flush
        failed): at once if it is already, else on the thread that finishes it (the
        journal's flusher). ``fn`` must not block."""
        with self._lock:
            if not self._done.is_set():
                self._then.append(fn)
                return
        fn(self._failure)

    def wait(self) -> None:
        """Return once the write is durable; raise ``IOFailure`` if its flush failed."""
        self._done.wait()
        if self._failure is not None:
            raise self._failure


Durable.DONE = Durable()
Durable.DONE.finish(None)


class StateStore:
    def __init__(self, path: Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self._mem: dict[str, Any] = {"v": 1, "type": "phase_state", "marks": {}}
        self._jobs: dict[str, dict[str, int]] = {}
        self._journal_pos = 0
        self._journal_ino = -1
        self._journal_lines = 0
        self._compact_at = 1024  # journal lines; doubles with what stays live (amortized)
        self._jlock = threading.Lock()
        self.journal_sync = GroupSync("the job journal")

    # -- reading -------------------------------------------------------------
    def _read(self) -> dict[str, Any]:
        if self.path is None:
            return self._mem
        try:
            with open(self.path, "rb") as f:
                data = f.read(MAX_STATE_BYTES + 1)
        except FileNotFoundError:
            return {"v": 1, "type": "phase_state", "marks": {}}
        except OSError as e:
            raise from_oserror(e, self.path, "read") from None
        return _check_state(data, self.path)

    def _update(self, fn: Callable[[dict[str, Any]], T]) -> T:
        if self.path is None:
            return fn(self._mem)
        try:
            make_dirs(self.path.parent)
            with locked(self.path.with_name(self.path.name + ".lock")):
                doc = self._read()
                before = json.dumps(doc, sort_keys=True)
                result = fn(doc)
                if json.dumps(doc, sort_keys=True) != before:  # nothing new: no write
                    data = json.dumps(doc, sort_keys=True, indent=1).encode() + b"\n"
                    write_atomic(self.path, data, mode=0o600)
                return result
        except IOFailure as e:
            if e.details.get("errno") != "EROFS":
                raise
            # A read-only state (read-only media) still answers when nothing would change.
            doc = self._read()
            before = json.dumps(doc, sort_keys=True)
            result = fn(doc)
            if json.dumps(doc, sort_keys=True) != before:
                raise
            return result

    def marks(self) -> dict[str, Mark]:
        out = {}
        for k, m in self._read()["marks"].items():
            out[k] = Mark(int(m["version"]), str(m["id"]))
        return out

    # -- updating ------------------------------------------------------------
    def commit_mark(self, key: str, version: int, doc_id: str) -> None:
        """Raise the high-water mark for ``key`` (after a full verification).

        Re-checked under the lock, so two racing verifiers cannot lower it.
        """
        def apply(doc: dict[str, Any]) -> None:
            cur = doc["marks"].get(key)
            if cur is not None:
                if version < cur["version"] or (version == cur["version"]
                                                and doc_id != cur["id"]):
                    raise Rollback(f"{key} version {version} is behind the mark "
                                   f"{cur['version']} recorded meanwhile")
            doc["marks"][key] = {"version": version, "id": doc_id}
        self._update(apply)

    def record_job(self, submitter: str, job_id: str, expires: int, now: int) -> None:
        """Remember an accepted job; raise ``Replay`` if it was seen before."""
        (err,) = self.record_jobs(submitter, [(job_id, expires)], now)
        if err is not None:
            raise err

    def record_jobs(self, submitter: str, jobs: list[tuple[str, int]], now: int
                    ) -> list[PhaseError | None]:
        """Remember several accepted jobs (``(job_id, expires)``) of one submitter at
        once: one append and one shared flush for all of them. Returns, per job, None
        (recorded, durable when this returns) or the error that refused it alone
        (``Replay``, or ``TempFailure`` for too many unexpired jobs); a failed write or
        flush raises for all of them."""
        errors, fd, ticket = self._append_jobs(submitter, jobs, now)
        if fd is not None:
            # durable before this returns; concurrent callers share one fdatasync
            try:
                self.journal_sync.wait(fd, ticket)
            finally:
                os.close(fd)
        return errors

    def begin_record_job(self, submitter: str, job_id: str, expires: int, now: int
                         ) -> Durable:
        """``record_job`` without waiting for the flush: the id is remembered (a replay
        is refused from now on) and its journal line written; the flush runs on the
        journal's flusher thread, shared with other writers, while the caller goes on.
        ``wait()`` on the result returns once the line is durable (``IOFailure`` if the
        flush failed). Raises ``Replay`` / ``TempFailure`` like ``record_job``."""
        (err,), pending = self.begin_record_jobs(submitter, [(job_id, expires)], now)
        if err is not None:  # (nothing was written: ``pending`` is ``Durable.DONE``)
            raise err
        return pending

    def begin_record_jobs(self, submitter: str, jobs: list[tuple[str, int]], now: int
                          ) -> tuple[list[PhaseError | None], Durable]:
        """``record_jobs`` without waiting for the flush: the errors per job, and one
        ``Durable`` for the lines of the jobs recorded."""
        errors, fd, ticket = self._append_jobs(submitter, jobs, now)
        if fd is None:
            return errors, Durable.DONE
        pending = Durable()

        def done(failure: IOFailure | None) -> None:
            os.close(fd)
            pending.finish(failure)

        self.journal_sync.later(fd, ticket, done)
        return errors, pending

    def _append_jobs(self, submitter: str, jobs: list[tuple[str, int]], now: int
                     ) -> tuple[list[PhaseError | None], int | None, int]:
        """Admit and append; returns the errors per job and, when lines were written,
        the open journal fd and the flush ticket that covers them (the caller makes
        them durable and closes the fd)."""
        errors: list[PhaseError | None] = []
        lines = bytearray()
        with self._jlock:
            if self.path is None:
                for job_id, expires in jobs:
                    errors.append(self._admit_one(submitter, job_id, expires, now))
                return errors, None, 0
            journal = self.path.with_name(self.path.name + ".jobs")
            make_dirs(self.path.parent)
            with locked(self.path.with_name(self.path.name + ".jobs.lock")):
                fd = self._open_journal(journal)
                try:
                    with fs_errors(journal, "append to the job journal"):
                        self._catch_up(fd)
                        for job_id, expires in jobs:
                            err = self._admit_one(submitter, job_id, expires, now)
                            errors.append(err)
                            if err is None:
                                lines += json.dumps({"s": submitter, "j": job_id, "e": expires},
                                                    separators=(",", ":")).encode() + b"\n"
                        if lines:
                            os.write(fd, lines)
                    ticket = self.journal_sync.ticket() if lines else 0
                    self._journal_pos += len(lines)
                    self._journal_lines += sum(e is None for e in errors)
                except BaseException:
                    os.close(fd)
                    raise
                if self._journal_lines > self._compact_at:
                    self._compact(journal, now)  # durable by itself
                    self.journal_sync.reset()
        if not lines:
            os.close(fd)
            return errors, None, 0
        return errors, fd, ticket

    def _admit_one(self, submitter: str, job_id: str, expires: int, now: int
                   ) -> PhaseError | None:
        if expires - now > MAX_JOB_LIFETIME_S:
            return Replay("job manifest lifetime is longer than the replay window "
                          f"({MAX_JOB_LIFETIME_S} s)")
        try:
            self._admit(submitter, job_id, expires, now)
        except (Replay, TempFailure) as e:
            return e
        return None

    @staticmethod
    def _open_journal(journal: Path) -> int:
        """The journal, opened for appending; never through a symbolic link."""
        created = not os.path.lexists(journal)
        try:
            fd = open_nofollow(journal, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        except OSError as e:
            raise from_oserror(e, journal, "open the job journal") from None
        if created:
            fsync_dir(journal.parent)  # the new file's name is durable before its lines
        return fd

    def _admit(self, submitter: str, job_id: str, expires: int, now: int) -> None:
        seen = self._jobs.setdefault(submitter, {})
        if job_id in seen and seen[job_id] > now:
            raise Replay(f"job {job_id[:23]}… was already accepted from this submitter",
                         hint="a job runs once; sign a new manifest (new nonce)")
        if len(seen) >= MAX_JOBS_PER_SUBMITTER:
            for jid in [j for j, exp in seen.items() if exp <= now]:
                del seen[jid]
            if len(seen) >= MAX_JOBS_PER_SUBMITTER:
                raise TempFailure("too many unexpired jobs from this submitter; retry later")
        seen[job_id] = expires

    def _catch_up(self, fd: int) -> None:
        """Read journal lines other writers (or an earlier life) appended."""
        st = os.fstat(fd)
        if st.st_ino != self._journal_ino:  # first read, or compacted meanwhile
            self._jobs, self._journal_pos, self._journal_lines = {}, 0, 0
            self._journal_ino = st.st_ino
        if st.st_size == self._journal_pos:
            return
        data = os.pread(fd, st.st_size - self._journal_pos, self._journal_pos)
        end = data.rfind(b"\n") + 1
        if end < len(data):  # a torn last line from a crash: cut it off
            os.ftruncate(fd, self._journal_pos + end)
        for raw in data[:end].splitlines():
            if len(raw) > MAX_JOURNAL_LINE:
                continue
            try:
                rec = json.loads(raw)
                self._jobs.setdefault(str(rec["s"]), {})[str(rec["j"])] = int(rec["e"])
            except (ValueError, KeyError, TypeError):
                continue
            self._journal_lines += 1
        self._journal_pos += end

    def _compact(self, journal: Path, now: int) -> None:
        lines = []
        for sub, seen in self._jobs.items():
            for jid in [j for j, exp in seen.items() if exp <= now]:
                del seen[jid]
            lines += [json.dumps({"s": sub, "j": j, "e": e}, separators=(",", ":"))
                      for j, e in seen.items()]
        data = ("\n".join(lines) + "\n").encode() if lines else b""
        write_atomic(journal, data, mode=0o600)
        self._journal_ino = os.stat(journal).st_ino
        self._journal_pos, self._journal_lines = len(data), len(lines)
        self._compact_at = max(1024, 2 * len(lines))


def _check_state(data: bytes, path: Path) -> dict[str, Any]:
    """The parsed state file, or ``ConfigError`` (78) naming the file and the bad key."""
    def damaged(what: str) -> ConfigError:
        return ConfigError(f"state file {path} is damaged: {what}", path=str(path),
                           hint="restore it from a backup; deleting it disables "
                                "rollback protection until the next update")
    if len(data) > MAX_STATE_BYTES:
        raise damaged(f"it is over {MAX_STATE_BYTES} bytes")
    try:
        doc = json.loads(data)
    except ValueError as e:  # also bad UTF-8
        raise damaged(f"not JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("type") != "phase_state":
        raise damaged('not a {"type": "phase_state"} object')
    marks = doc.setdefault("marks", {})
    if not isinstance(marks, dict):
        raise damaged('"marks" is not an object')
    for key, m in marks.items():
        if not _is_mark(m):
            raise damaged(f"marks.{key} is not {{\"version\": <integer>, \"id\": <string>}}")
    return doc


def _is_mark(m: object) -> bool:
    """A rollback mark as stored: ``{"version": <int >= 0>, "id": <document id>}``."""
    return (isinstance(m, dict) and set(m) == {"version", "id"}
            and type(m["version"]) is int and m["version"] >= 0
            and isinstance(m["id"], str))


def default_state_path(home: Path) -> Path:
    return Path(home) / "state.json"


