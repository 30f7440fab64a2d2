"""The rollback state store: high-water marks and seen job ids, updated atomically.

One JSON file (under a flock) holds:
- ``marks``: for each ``boot/<channel>/<arch>``, the newest boot-manifest version
  accepted and its document id;
- ``jobs``: for each submitter, the ids of jobs accepted and not yet expired,
  so a replayed ``run`` is refused while memory stays bounded (entries leave
  when their manifest expires; manifests whose lifetime exceeds
  ``MAX_JOB_LIFETIME_S`` are refused by the worker).

Callers verify first and record after: a rejected document never moves a mark.
``StateStore(None)`` keeps everything in memory (private mode).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from phase_core.documents import Mark
from phase_core.errors import ConfigError, Replay, Rollback, TempFailure
from phase_core.fsutil import locked, write_atomic

MAX_STATE_BYTES = 64 << 20
MAX_JOBS_PER_SUBMITTER = 100_000
MAX_JOB_LIFETIME_S = 7 * 24 * 3600
T = TypeVar("T")


class StateStore:
    def __init__(self, path: Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self._mem: dict[str, Any] = {"v": 1, "type": "phase_state", "marks": {}, "jobs": {}}

    # -- reading -------------------------------------------------------------
    def _read(self) -> dict[str, Any]:
        if self.path is None:
            return self._mem
        try:
            with open(self.path, "rb") as f:
                data = f.read(MAX_STATE_BYTES + 1)
        except FileNotFoundError:
            return {"v": 1, "type": "phase_state", "marks": {}, "jobs": {}}
        try:
            doc = json.loads(data)
            if not isinstance(doc, dict) or doc.get("type") != "phase_state":
                raise ValueError
            doc.setdefault("marks", {})
            doc.setdefault("jobs", {})
        except ValueError:
            raise ConfigError(f"state file {self.path} is damaged",
                              hint="restore it from a backup; deleting it disables "
                                   "rollback protection until the next update") from None
        return doc

    def _update(self, fn: Callable[[dict[str, Any]], T]) -> T:
        if self.path is None:
            return fn(self._mem)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with locked(self.path.with_name(self.path.name + ".lock")):
            doc = self._read()
            result = fn(doc)
            data = json.dumps(doc, sort_keys=True, indent=1).encode() + b"\n"
            write_atomic(self.path, data, mode=0o600)
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
        def apply(doc: dict[str, Any]) -> None:
            seen: dict[str, int] = doc["jobs"].setdefault(submitter, {})
            for jid in [j for j, exp in seen.items() if exp <= now]:
                del seen[jid]
            if job_id in seen:
                raise Replay(f"job {job_id[:23]}… was already accepted from this submitter",
                             hint="a job runs once; sign a new manifest (new nonce)")
            if expires - now > MAX_JOB_LIFETIME_S:
                raise Replay("job manifest lifetime is longer than the replay window "
                             f"({MAX_JOB_LIFETIME_S} s)")
            if len(seen) >= MAX_JOBS_PER_SUBMITTER:
                raise TempFailure("too many unexpired jobs from this submitter; retry later")
            seen[job_id] = expires
        self._update(apply)


def default_state_path(home: Path) -> Path:
    return Path(home) / "state.json"


