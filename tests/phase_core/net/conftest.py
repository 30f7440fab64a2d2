"""Helpers for loopback transport tests: everything on 127.0.0.1, every test bounded."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest

from phase_core import log

TEST_TIMEOUT_S = 60.0


def run(coro: Coroutine[Any, Any, Any], timeout: float = TEST_TIMEOUT_S) -> Any:
    """Run one test coroutine under a hard timeout."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def eventually(cond: Callable[[], bool], timeout: float = 20.0) -> None:
    """Wait until ``cond()`` holds (polling the event loop), or fail."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


class LogCapture:
    def __init__(self) -> None:
        self.buf = io.StringIO()

    def events(self, name: str) -> list[dict[str, Any]]:
        out = []
        for line in self.buf.getvalue().splitlines():
            rec = json.loads(line)
            if rec.get("event") == name:
                out.append(rec)
        return out


@pytest.fixture
def logs(monkeypatch: pytest.MonkeyPatch) -> LogCapture:
    cap = LogCapture()
    monkeypatch.setattr(log.get(), "_stream", cap.buf)
    monkeypatch.setattr(log.get(), "threshold", log.LEVELS["info"])
    return cap


Handler = Callable[[str, Any], Awaitable[None]]
