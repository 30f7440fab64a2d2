"""kill -9 at many seeded points of a download, then a rerun.

After every kill the store holds only blobs whose bytes hash to their names;
each rerun resumes from the partial file it finds (its first request asks for
exactly the bytes after it) or restarts; the last run completes.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from tests.phase_fetch.badserver import Route
from tests.phase_fetch.conftest import blob, cid, store_is_sound

SIZE = 2 << 20
DATA = blob(SIZE, 42)
ID = cid(DATA)
HEX = ID[7:]
PATH = f"/sha256/{HEX}"
ROUNDS = 20


def start(cas, url):
    return subprocess.Popen(
        [sys.executable, "-m", "phase_fetch", "get", ID, f"--size={SIZE}", f"--mirror={url}",
         f"--cas={cas}", "--read-timeout=5", "--retries=0", "-q"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_and_kill(proc, partial, rng):
    """Kill when the partial file reaches a random size, or at a random early moment."""
    if rng.random() < 0.25:
        deadline = time.monotonic() + rng.uniform(0, 0.3)  # anywhere, even during startup
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.001)
    else:
        target = rng.randrange(1, SIZE)
        give_up = time.monotonic() + 20
        while proc.poll() is None and time.monotonic() < give_up:
            try:
                if partial.stat().st_size >= target:
                    break
            except FileNotFoundError:
                pass
            time.sleep(0.0005)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    return proc.wait(timeout=20)


@pytest.mark.slow
def test_kill_9_then_rerun(server, cas):
    server.routes[PATH] = Route(DATA, "slow", chunk=32768, delay_s=0.002)
    rng = random.Random(4)
    partial = cas / "partial" / HEX
    killed = resumed = 0
    for i in range(ROUNDS):
        held = partial.stat().st_size if partial.exists() else 0
        if i == ROUNDS // 2 and held > 100:  # a damaged partial must not poison the store
            with open(partial, "r+b") as f:
                f.seek(100)
                f.write(bytes([DATA[100] ^ 1]))
        seen = len(server.log)
        rc = wait_and_kill(start(cas, server.url), partial, rng)
        ids = store_is_sound(cas)
        reqs = server.log[seen:]
        if reqs:  # the first request of a run resumes from exactly what was held
            assert reqs[0].range == (f"bytes={held}-" if held else None)
            resumed += bool(held)
        if rc == -signal.SIGKILL:
            killed += 1
        else:
            assert rc == 0 and ids == [ID]
            os.unlink(cas / "sha256" / HEX[:2] / HEX[2:])  # start over for the next round
    print(f"killed={killed} resumed={resumed}")
    assert killed >= ROUNDS // 2 and resumed >= 3
    rc = start(cas, server.url).wait(timeout=30)
    assert rc == 0
    assert store_is_sound(cas) == [ID]
    assert not partial.exists()
