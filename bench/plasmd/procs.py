"""Process helpers the plasmd benches share: read a started process's first record,
stop it the way a user would (SIGTERM, then SIGKILL if it hangs)."""

from __future__ import annotations

import json
import select
import signal
import subprocess
from typing import Any


def read_line(proc: subprocess.Popen[bytes], timeout: float, what: str) -> dict[str, Any]:
    """The next JSON line ``proc`` prints, or exit the bench if none comes in time."""
    assert proc.stdout is not None
    r, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if r else b""
    if not line:
        proc.kill()
        proc.wait()
        raise SystemExit(f"{what} did not answer within {timeout:.0f} s")
    return json.loads(line)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
