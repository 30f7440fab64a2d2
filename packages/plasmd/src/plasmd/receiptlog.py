"""The receipt log: append-only JSON lines, each line chained to the one before.

Line n is ``{"v":1,"type":"receipt_log_entry","seq":n,"prev":H(n-1),"receipt":{envelope}}``
where H is ``sha256:`` + hex SHA-256 of the previous line's bytes (without its
newline) and H(-1) is the hash of the empty string. Every append is durable
(fdatasync'd; concurrent appends share one flush, ``phase_core.groupsync``)
before ``append`` returns, then a small fixed-width head file (``<log>.head``:
the last seq and the hash of the last line) is overwritten in place with one
small write.
Verification walks the chain:

- an edited line breaks the next line's ``prev``;
- reordered lines break ``seq`` and ``prev``;
- a truncated log ends before the seq the head file names;
- a torn last line (a crash in the middle of an append) is reported; ``repair()``
  moves it aside (its receipt was never acknowledged to anyone, but nothing is
  dropped): the bytes go to ``<log>.aside-<UTC time>`` next to the log.

``salvage()`` (``plasmd receipts --repair``) handles everything else a crash or a
second writer can leave behind: it keeps the longest prefix of entries that chain
from the first, moves every byte after it aside to ``<log>.aside-<UTC time>``, and
rewrites the head to name the last kept entry. Only one process writes the log:
the daemon and the repair command both hold the home's lock (homelock.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from phase_core.errors import IOFailure, Malformed, Rejected
from phase_core.fsutil import fsync_dir, write_atomic
from phase_core.groupsync import GroupSync

GENESIS = "sha256:" + hashlib.sha256(b"").hexdigest()
MAX_LINE_BYTES = 1 << 20
HEAD_BYTES = 128  # one write, well inside a disk sector
HEAD_EVERY = 64  # under load the head is rewritten at least once per this many entries


class LogTampered(Rejected):
    slug = "receipt_log_tampered"


def line_hash(line: bytes) -> str:
    return "sha256:" + hashlib.sha256(line.rstrip(b"\n")).hexdigest()


@dataclass(frozen=True)
class Entry:
    seq: int
    prev: str
    receipt: dict[str, Any]
    hash: str


class ReceiptLog:
    def __init__(self, path: Path, sync: GroupSync | None = None) -> None:
        self.path = Path(path)
        self.head_path = self.path.with_name(self.path.name + ".head")
        self._lock = threading.Lock()  # the chain: seq, prev, the order of the lines
        self._head_lock = threading.Lock()
        self._fd: int | None = None  # kept open for appending
        self.sync = sync or GroupSync(f"the receipt log {self.path}")
        self._seq, self._last = self._load_head()
        self._head_seq = self._seq  # the seq the head file names

    def _load_head(self) -> tuple[int, str]:
        try:
            head = json.loads(self.head_path.read_bytes())
            return int(head["seq"]), str(head["hash"])
        except FileNotFoundError:
            return -1, GENESIS
        except (ValueError, KeyError, TypeError):
            raise LogTampered(f"receipt log head {self.head_path} is damaged") from None

    @property
    def count(self) -> int:
        return self._seq + 1

    def append(self, receipt: dict[str, Any]) -> Entry:
        """Append one receipt envelope; its line is durable when this returns.

        Concurrent appends share one fdatasync (group commit): the line is written
        under the chain's lock, then this waits until a flush made after the write
        completes. The head file is updated after the flush, in place and without
        its own fdatasync: a crash may leave it naming an earlier entry, and
        ``repair()`` (run at every start) adopts the durable entries that chain
        from it."""
        fd, ticket, entry = self._write(receipt)
        self.sync.wait(fd, ticket)
        self._advance_head(entry.seq, entry.hash)
        return entry

    def append_later(self, receipt: dict[str, Any],
                     done: Callable[[Entry | IOFailure], Any]) -> None:
        """Append one receipt envelope and return at once; ``done(entry)`` is called
        (on the flusher thread) once its line is durable, ``done(error)`` if it cannot
        be made durable. The caller hands the receipt on only from ``done``. A write
        that fails raises here."""
        fd, ticket, entry = self._write(receipt)

        def flushed(err: IOFailure | None) -> None:
            if err is not None:
                done(err)
                return
            # the head is a hint (see append): a later entry already written names
            # it soon enough, so under load it is rewritten once per HEAD_EVERY
            # entries or at the end of a burst, not once per entry
            if entry.seq == self._seq or entry.seq - self._head_seq >= HEAD_EVERY:
                try:
                    self._advance_head(entry.seq, entry.hash)
                except IOFailure as e:  # as append() would raise it
                    done(e)
                    return
            done(entry)

        self.sync.later(fd, ticket, flushed)

    def _write(self, receipt: dict[str, Any]) -> tuple[int, int, Entry]:
        """Write one entry (not yet durable): its descriptor, ticket and entry."""
        with self._lock:
            seq = self._seq + 1
            rec = {"v": 1, "type": "receipt_log_entry", "seq": seq, "prev": self._last,
                   "receipt": receipt}
            line = json.dumps(rec, sort_keys=True, separators=(",", ":"),
                              ensure_ascii=True).encode()
            if len(line) > MAX_LINE_BYTES:
                raise Malformed("receipt is too large for the log")
            try:
                fd = self._open()
                os.write(fd, line + b"\n")
            except OSError as e:
                raise IOFailure(f"cannot append to {self.path}: {e.strerror}") from None
            ticket = self.sync.ticket()
            h = line_hash(line)
            prev, self._seq, self._last = self._last, seq, h
        return fd, ticket, Entry(seq, prev, receipt, h)

    def _open(self) -> int:
        """The log's append descriptor (called under ``_lock``)."""
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            new = not self.path.exists()
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
                               | os.O_NOFOLLOW, 0o600)
            if new:  # the new name must survive a power cut too
                fsync_dir(self.path.parent)
        return self._fd

    def close(self) -> None:
        """Close the append descriptor and flush the head file (a clean stop)."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
        try:
            fd = os.open(self.head_path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)

    def _advance_head(self, seq: int, h: str) -> None:
        """Name entry ``seq`` (durable) in the head, unless a later one is named."""
        with self._head_lock:
            if seq <= self._head_seq:
                return
            self._write_head(seq, h, durable=not self.head_path.exists())
            self._head_seq = seq

    def _write_head(self, seq: int, h: str, *, durable: bool = True) -> None:
        head = json.dumps({"seq": seq, "hash": h}).encode().ljust(HEAD_BYTES - 1) + b"\n"
        if not self.head_path.exists():
            write_atomic(self.head_path, head, mode=0o600)
            return
        try:
            fd = os.open(self.head_path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.pwrite(fd, head, 0)
                if durable:
                    os.fdatasync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            raise IOFailure(f"cannot update {self.head_path}: {e.strerror}") from None

    def entries(self) -> Iterator[Entry]:
        """Every entry, checking the chain as it goes; raise ``LogTampered`` on a break."""
        prev, expect = GENESIS, 0
        try:
            f = open(self.path, "rb")
        except FileNotFoundError:
            if self._seq >= 0:
                raise LogTampered(f"receipt log {self.path} is missing; the head names "
                                  f"{self._seq + 1} entries") from None
            return
        with f:
            for raw in iter(lambda: f.readline(MAX_LINE_BYTES + 1), b""):
                if not raw.endswith(b"\n"):
                    raise LogTampered(f"entry {expect} is torn (the log ends mid-line)",
                                      hint="run `plasmd receipts --repair` to cut it off")
                try:
                    rec = json.loads(raw)
                    seq, p, receipt = rec["seq"], rec["prev"], rec["receipt"]
                except (ValueError, KeyError, TypeError):
                    raise LogTampered(f"entry {expect} is not a log entry") from None
                if seq != expect:
                    raise LogTampered(f"entry {expect} has seq {seq}: entries were removed "
                                      "or reordered")
                if p != prev:
                    raise LogTampered(f"entry {seq} does not chain to entry {seq - 1}: "
                                      "an earlier entry was edited, removed or reordered")
                h = line_hash(raw)
                yield Entry(seq, p, receipt, h)
                prev, expect = h, expect + 1
        if expect - 1 < self._seq:
            raise LogTampered(f"the log ends at entry {expect - 1} but the head names entry "
                              f"{self._seq}: it was truncated")
        if expect - 1 > self._seq or (expect and prev != self._last):
            raise LogTampered("the log does not match its head file: entries were added "
                              "or the last entry was changed")

    def repair(self) -> int:
        """Recover from a crash in the middle of ``append``; return bytes moved aside.

        A torn last line is moved to an aside file (its receipt was never
        acknowledged). Complete entries after the one the head file names, each
        chaining to the one before (the crash came before the head update), are
        adopted. Anything else is left for ``entries()`` to report and for
        ``salvage()`` to repair.
        """
        with self._lock:
            try:
                data = self.path.read_bytes()
            except FileNotFoundError:
                return 0
            cut = 0
            if data and not data.endswith(b"\n"):
                keep = data.rfind(b"\n") + 1
                self._set_aside(data[keep:], keep)
                cut, data = len(data) - keep, data[:keep]
            lines = data.splitlines()
            seq, last = self._seq, self._last
            for raw in lines[seq + 1:] if len(lines) > seq + 1 else ():
                try:
                    rec = json.loads(raw)
                    ok = rec["seq"] == seq + 1 and rec["prev"] == last
                except (ValueError, KeyError, TypeError):
                    ok = False
                if not ok:
                    break
                seq, last = seq + 1, line_hash(raw)
            if seq != self._seq:
                with self._head_lock:
                    self._write_head(seq, last)
                    self._seq, self._last, self._head_seq = seq, last, seq
            return cut

    def salvage(self, accept: Callable[[dict[str, Any]], bool] | None = None
                ) -> dict[str, Any]:
        """Keep every entry that chains from the first; move the rest aside.

        ``accept`` (e.g. "this node's signature on the receipt verifies") may reject
        an entry too: it and everything after it are moved aside. Returns
        ``{"kept": N, "moved_bytes": B, "aside": path or None, "head_was": seq}``.
        An entry the head names by seq must also match the head's hash; from the
        first one that does not, everything is moved aside.
        """
        with self._lock:
            try:
                data = self.path.read_bytes()
            except FileNotFoundError:
                data = b""
            keep, kept, last = _valid_prefix(data, self._seq, self._last, accept)
            head_was = self._seq
            aside = self._set_aside(data[keep:], keep) if keep < len(data) else None
            if kept == 0:
                self.head_path.unlink(missing_ok=True)
                fsync_dir(self.head_path.parent)
            else:
                self._write_head(kept - 1, last)
            self._seq, self._last, self._head_seq = kept - 1, last, kept - 1
            return {"kept": kept, "moved_bytes": len(data) - keep,
                    "aside": str(aside) if aside else None, "head_was": head_was}

    def _set_aside(self, tail: bytes, keep: int) -> Path:
        """Write ``tail`` to a new aside file (durably), then cut the log at ``keep``."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside = self.path.with_name(f"{self.path.name}.aside-{stamp}")
        n = 0
        while not write_atomic(aside, tail, mode=0o600, exclusive=True):
            n += 1
            aside = self.path.with_name(f"{self.path.name}.aside-{stamp}-{n}")
        try:
            with open(self.path, "r+b") as f:
                f.truncate(keep)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            raise IOFailure(f"cannot cut {self.path}: {e.strerror}") from None
        return aside


def _valid_prefix(data: bytes, head_seq: int, head_hash: str,
                  accept: Callable[[dict[str, Any]], bool] | None) -> tuple[int, int, str]:
    """(bytes, entries, hash of the last) of the longest chained prefix of ``data``."""
    prev, seq, pos = GENESIS, 0, 0
    while pos < len(data):
        end = data.find(b"\n", pos)
        if end < 0 or end - pos > MAX_LINE_BYTES:
            break
        raw = data[pos:end]
        try:
            rec = json.loads(raw)
            ok = isinstance(rec, dict) and rec.get("seq") == seq and rec.get("prev") == prev \
                and isinstance(rec.get("receipt"), dict) \
                and (accept is None or accept(rec["receipt"]))
        except ValueError:
            ok = False
        h = line_hash(raw)
        if not ok or (seq == head_seq and h != head_hash):
            break
        prev, seq, pos = h, seq + 1, end + 1
    return pos, seq, prev
