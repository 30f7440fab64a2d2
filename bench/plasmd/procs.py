"""Process helpers the plasmd benches share: read a started process's first record,
stop it the way a user would (SIGTERM, then SIGKILL if it hangs), read a worker's CPU
time (its job processes' included)."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
from pathlib import Path
from typing import Any

CLK = os.sysconf("SC_CLK_TCK")


def cpu_s(where: str) -> float:
    """User + system CPU seconds of ``/proc/<pid>`` or ``/proc/<pid>/task/<tid>``
    (0 once it is gone)."""
    try:
        fields = Path(f"{where}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK


def children_cpu_s(pid: int) -> float:
    """CPU seconds of the process's live children: a node's job processes
    (plasmd.jobproc), which run its guests."""
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except FileNotFoundError:
        return 0.0
    return sum(cpu_s(f"/proc/{k}") for k in kids)


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
