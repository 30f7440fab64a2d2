"""The disagreement log: which workers' receipts disagreed with the agreed output.

``<home>/dispatch/disagreements.jsonl``, append-only, one signed envelope per
line, of type ``disagreement``, signed by the home's node key (the user's key,
the one that signs the jobs). Its body:

    {"seq": n, "prev": H(line n-1), "at": "<UTC time>", "job": "sha256:…",
     "node": "<worker node id>", "address": "host:port", "verdict": "outvoted",
     "got": {"ended":…, "exit_code":…, "stdout":…, "stderr":…}, "receipt": "sha256:…",
     "accepted": {…the same fields…} | null, "agreeing": ["<node id>", …]}

``verdict`` is ``outvoted`` (``quorum`` other receipts agreed on ``accepted``),
``reexec`` (a dispute settled by local re-execution; ``accepted`` is what it
gave) or ``disputed`` (no output won; ``accepted`` is null; every worker of the
dispute gets an entry). H is the SHA-256 of the previous line's bytes
(``receiptlog.line_hash``); the first line's ``prev`` is the hash of the empty
string. ``<log>.head`` names the last seq and hash (written atomically after
every append), so a truncated log is caught too.

``verify()`` (and every dispatch that reads the log) checks each line's
signature against the home's key, the seq numbers, the hash chain and the head:
an edited, reordered, removed or truncated entry is ``disagreement_log_tampered``
(exit 1). Size cap: when the log reaches ``MAX_BYTES`` it becomes
``disagreements.1.jsonl`` (replacing the one before) and a new log continues
the chain (its first ``prev`` is the old log's last hash), so the two files hold
at most about 2 × ``MAX_BYTES``. Appends hold ``<log>.lock`` (flock), so two
dispatches on one home can share it.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from phase_core import crypto, timefmt
from phase_core.errors import PhaseError, Rejected
from phase_core.fsutil import locked, write_atomic
from phase_core.identity import Identity
from phase_core.signing import sign, signing_message
from plasmd.receiptlog import GENESIS, line_hash

TYPE = "disagreement"
MAX_BYTES = 4 << 20
MAX_LINE_BYTES = 64 << 10
VERDICTS = ("outvoted", "reexec", "disputed")
COUNTED = ("outvoted", "reexec")  # the verdicts that show a worker wrong


class LogTampered(Rejected):
    slug = "disagreement_log_tampered"


def log_path(home: Path) -> Path:
    return Path(home) / "dispatch" / "disagreements.jsonl"


class DisagreementLog:
    def __init__(self, path: Path, identity: Identity, *, max_bytes: int = MAX_BYTES) -> None:
        self.path = Path(path)
        self.identity = identity
        self.max_bytes = max_bytes
        self.head_path = self.path.with_name(self.path.name + ".head")
        self.old_path = self.path.with_name(self.path.stem + ".1" + self.path.suffix)
        self.lock_path = self.path.with_name(self.path.name + ".lock")

    # -- reading ------------------------------------------------------------------
    def counts(self) -> Counter[str]:
        """Entries that show a worker wrong (``outvoted``, ``reexec``), per node id,
        over both files, after ``verify``. ``disputed`` entries are kept as evidence
        but not counted: no one knows which side of a dispute lied."""
        c: Counter[str] = Counter()
        for body in self.verify():
            if body.get("verdict") in COUNTED:
                c[str(body["node"])] += 1
        return c

    def verify(self) -> list[dict[str, Any]]:
        """Every entry's body, oldest first; raises ``LogTampered`` on any damage."""
        old: list[dict[str, Any]] = []
        first_prev = GENESIS
        if self.old_path.exists():
            old, (_, first_prev) = self._read(self.old_path, None)
        head = self._head()
        if not self.path.exists():
            if head is not None:
                raise self._tampered("the log is missing but its head names entries")
            return old
        bodies, last = self._read(self.path, first_prev)
        if head is None:
            if bodies:
                raise self._tampered("the head file is missing")
        elif last != head:
            raise self._tampered(f"the log ends at seq {last[0]}, its head names {head[0]} "
                                 "(truncated or rewritten)")
        return old + bodies

    def _read(self, path: Path, expect_prev: str | None
              ) -> tuple[list[dict[str, Any]], tuple[int, str]]:
        bodies: list[dict[str, Any]] = []
        seq, prev = -1, expect_prev
        with open(path, "rb") as f:
            for n, line in enumerate(iter(lambda: f.readline(MAX_LINE_BYTES + 1), b""), 1):
                if len(line) > MAX_LINE_BYTES or not line.endswith(b"\n"):
                    raise self._tampered(f"{path.name} line {n} is cut or too long")
                b = self._signed_body(line, f"{path.name} line {n}")
                if seq >= 0 and b.get("seq") != seq + 1:
                    raise self._tampered(f"{path.name} line {n}: seq {b.get('seq')} after {seq}")
                if prev is not None and b.get("prev") != prev:
                    raise self._tampered(f"{path.name} line {n} does not chain to the line "
                                         "before (an entry was edited, removed or moved)")
                seq, prev = int(b["seq"]), line_hash(line)
                bodies.append(b)
        return bodies, (seq, prev or GENESIS)

    def _signed_body(self, line: bytes, where: str) -> dict[str, Any]:
        """The body of one line, whose one signature must be this home's key's."""
        try:
            obj = json.loads(line)
            body, sigs = obj["body"], obj["signatures"]
            ok = (obj.get("type") == TYPE and isinstance(body, dict) and len(sigs) == 1
                  and sigs[0]["key"] == self.identity.node_id)
            if ok:
                crypto.verify(bytes.fromhex(self.identity.node_id),
                              signing_message(TYPE, body), bytes.fromhex(sigs[0]["sig"]))
        except PhaseError as e:
            raise self._tampered(f"{where}: {e.message}") from None
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            raise self._tampered(f"{where} is not a signed entry") from None
        if not ok:
            raise self._tampered(f"{where} is not signed by this home's key")
        return body  # type: ignore[no-any-return]

    def _head(self) -> tuple[int, str] | None:
        try:
            with open(self.head_path, "rb") as f:
                h = json.loads(f.read(4096))
            return int(h["seq"]), str(h["hash"])
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):
            raise self._tampered("the head file is damaged") from None

    def _tampered(self, what: str) -> LogTampered:
        return LogTampered(f"the disagreement log {self.path} is damaged: {what}",
                           hint=f"move {self.path.parent} aside to start a new log (its "
                                "entries are then forgotten)")

    # -- writing ------------------------------------------------------------------
    def append(self, entries: list[dict[str, Any]]) -> None:
        """Sign and append entries (each a body without ``seq``, ``prev``, ``at``)."""
        if not entries:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with locked(self.lock_path):
            head = self._head()
            seq, prev = head if head is not None else (-1, GENESIS)
            if self.path.exists() and self.path.stat().st_size >= self.max_bytes:
                os.replace(self.path, self.old_path)  # the chain goes on in the new file
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                         0o600)
            try:
                for e in entries:
                    seq += 1
                    body = {**e, "seq": seq, "prev": prev,
                            "at": timefmt.format_time(timefmt.now())}
                    line = (json.dumps(sign(TYPE, body, [self.identity]),
                                       separators=(",", ":")) + "\n").encode()
                    os.write(fd, line)
                    prev = line_hash(line)
                os.fdatasync(fd)
            finally:
                os.close(fd)
            write_atomic(self.head_path, json.dumps({"seq": seq, "hash": prev}).encode(),
                         mode=0o600)


def entry(job: str, node: str, address: str, verdict: str, got: Any, receipt_id: str,
          accepted: Any, agreeing: list[str]) -> dict[str, Any]:
    """One entry's body (``got`` and ``accepted``: ``quorum.Key`` tuples or None)."""
    assert verdict in VERDICTS
    return {"job": job, "node": node, "address": address, "verdict": verdict,
            "got": _key(got), "receipt": receipt_id,
            "accepted": _key(accepted) if accepted is not None else None,
            "agreeing": list(agreeing)}


def _key(k: Any) -> dict[str, Any]:
    ended, code, out, err = k
    return {"ended": ended, "exit_code": code, "stdout": out, "stderr": err}
