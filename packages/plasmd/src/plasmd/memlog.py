"""An in-memory receipt log for private mode (nothing is written to disk)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from plasmd.receiptlog import GENESIS, Entry, line_hash


class MemoryReceiptLog:
    def __init__(self) -> None:
        self._entries: list[Entry] = []

    @property
    def count(self) -> int:
        return len(self._entries)

    def append(self, receipt: dict[str, Any]) -> Entry:
        import json

        prev = self._entries[-1].hash if self._entries else GENESIS
        seq = len(self._entries)
        line = json.dumps({"v": 1, "type": "receipt_log_entry", "seq": seq, "prev": prev,
                           "receipt": receipt}, sort_keys=True, separators=(",", ":")).encode()
        e = Entry(seq, prev, receipt, line_hash(line))
        self._entries.append(e)
        return e

    def entries(self) -> Iterator[Entry]:
        return iter(list(self._entries))

    def repair(self) -> int:
        return 0
