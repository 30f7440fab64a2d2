"""Progress on stderr, only when stderr is a terminal: bytes, rate and ETA per blob.

The total is the blob's known size, else the size the source announced
(Content-Length or Content-Range), so ``get`` without ``--size`` still shows an ETA.

A thread samples the fetcher's active sinks a few times a second, so the
download loop pays nothing for it.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from phase_fetch.sink import PartialWriter

INTERVAL_S = 0.25


def _mib(n: float) -> str:
    return f"{n / (1 << 20):.1f}"


class Progress:
    def __init__(self, active: dict[str, PartialWriter], stream: TextIO | None = None) -> None:
        self.active = active
        self.stream = stream or sys.stderr
        self._stop = threading.Event()
        self._seen: dict[str, tuple[float, int]] = {}
        self._thread = threading.Thread(target=self._run, name="phase-fetch-progress",
                                        daemon=True)

    def start(self) -> Progress:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._write("")

    def _write(self, text: str) -> None:
        try:
            self.stream.write("\r\x1b[K" + text)
            self.stream.flush()
        except (OSError, ValueError):
            pass

    def line(self) -> str:
        now = time.monotonic()
        parts = []
        for cid, sink in list(self.active.items()):
            got = sink.size
            t0, b0 = self._seen.setdefault(cid, (now, got))
            rate = (got - b0) / (now - t0) if now > t0 else 0.0
            total = sink.expected_size or sink.announced_size
            label = cid[7:19]
            if total:
                eta = f"{(total - got) / rate:.0f}s" if rate > 0 else "?"
                parts.append(f"{label} {_mib(got)}/{_mib(total)} MiB {_mib(rate)} MiB/s "
                             f"ETA {eta}")
            else:
                parts.append(f"{label} {_mib(got)} MiB {_mib(rate)} MiB/s")
        return " | ".join(parts)

    def _run(self) -> None:
        while not self._stop.wait(INTERVAL_S):
            self._write(self.line())
