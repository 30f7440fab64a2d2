"""Run a quickstart block of boot/README.md with ``sh``, as written.

A block is the ```sh fence after a ``<!-- boot-quickstart: NAME -->`` comment. It runs
from the checkout's root in its own session (so its ``&`` provider and its QEMU share
one process group), with its output (``sh -x``'s trace of each command, the provider's
log, the serial console) in a log file. The runner returns when a pattern shows in
that log, the block ends, or the deadline passes, and then kills the whole group and
checks that the port the block served on is free again.

The only substitutions, each said in the result's ``substitutions``:
- ``sudo`` is dropped at the start of a command when the test runs as root on a
  machine without sudo (the CI machine): the command itself runs as written.
- the provider's port 8080 becomes a free one only when something else holds 8080.

The block's stdin is /dev/null, so its ``apt-get install`` (no ``-y``) changes nothing
where it would have to ask: packages all there is a no-op, and upgrades or missing ones
abort at the prompt (the tests check the tools they need before the block runs).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.boot.conftest import ROOT

README = ROOT / "boot" / "README.md"
PORT = 8080


def block(name: str, readme: Path = README) -> str:
    """The ```sh block after ``<!-- boot-quickstart: NAME -->``."""
    text = readme.read_text()
    marker = f"<!-- boot-quickstart: {name} -->"
    at = text.find(marker)
    assert at >= 0, f"{readme} has no {marker}"
    m = re.compile(r"\s*```sh\n(.*?)\n```", re.S).match(text, at + len(marker))
    assert m, f"{marker} in {readme} is not followed by a ```sh block"
    return m.group(1) + "\n"


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Run:
    log: str
    seconds: float
    matched: bool
    exit_code: int | None
    log_path: Path
    port: int
    substitutions: list[str] = field(default_factory=list)
    left_running: list[int] = field(default_factory=list)  # the group after the kill

    def markers(self) -> list[str]:
        return [ln.strip() for ln in self.log.splitlines() if "PHASE-" in ln]

    def explain(self) -> str:
        tail = "\n".join(self.log.splitlines()[-60:])
        return (f"after {self.seconds:.1f} s (exit {self.exit_code}; substitutions "
                f"{self.substitutions or 'none'}); log {self.log_path}; last lines:\n{tail}")


def prepare(script: str) -> tuple[str, int, list[str]]:
    """The block with the substitutions this machine needs (module docstring)."""
    subs: list[str] = []
    if re.search(r"^\s*sudo ", script, re.M) and shutil.which("sudo") is None:
        if os.geteuid() != 0:
            msg = "the quickstart needs root for apt-get and there is no sudo"
            if os.environ.get("CI") == "true":
                pytest.fail(msg + "; CI must run it as root", pytrace=False)
            pytest.skip(msg)
        script = re.sub(r"^(\s*)sudo ", r"\1", script, flags=re.M)
        subs.append("sudo dropped (root, no sudo installed)")
    port = PORT
    if not port_free(PORT):
        port = free_port()
        script = re.sub(rf"(?<=[:=]){PORT}\b", str(port), script)
        subs.append(f"port {PORT} is in use here: {port} instead")
    return script, port, subs


def run(name: str, log_path: Path, *, until: str, timeout_s: float,
        readme: Path = README) -> Run:
    """Run block NAME; stop at ``until`` (a regex on the log), its end, or the deadline."""
    script, port, subs = prepare(block(name, readme))
    path = log_path.with_suffix(".sh")
    path.write_text(script)
    pattern = re.compile(until)
    start = time.monotonic()
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(["timeout", "--kill-after=5", str(int(timeout_s) + 5),
                                 "sh", "-x", str(path)], cwd=ROOT, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    matched = False
    try:
        while True:
            code = proc.poll()
            text = log_path.read_bytes().decode("utf-8", "replace")
            if pattern.search(text):
                matched = True
                break
            if code is not None or time.monotonic() - start > timeout_s:
                break
            time.sleep(0.2)
    finally:
        # the group, always: the block's shell may be gone while its provider is not
        kill_group(proc.pid)
        proc.wait()
    left = members(proc.pid)
    seconds = time.monotonic() - start
    text = log_path.read_bytes().decode("utf-8", "replace").replace("\r", "")
    return Run(text, seconds, matched, proc.returncode, log_path, port, subs, left)


def members(pgid: int) -> list[int]:
    """Live (not zombie) processes of the group, from /proc."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            pids.append(int(stat.parent.name))
    return pids


def kill_group(pgid: int) -> None:
    """SIGTERM the group, SIGKILL what is left after 5 s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 5
        while members(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not members(pgid):
            return
