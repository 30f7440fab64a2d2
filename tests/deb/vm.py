"""A booted Debian 12 VM (QEMU TCG, systemd as PID 1) driven through its agent.

The image (packaging/deb/vm/build-image) is cached and never written: each run boots
a qcow2 overlay on it. The guest's agent answers one JSON line per command on the
second serial port (a UNIX socket here); the first serial port is the console log.
The guest's UDP port 4433 is forwarded to a free port on 127.0.0.1.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

QEMU = "qemu-system-x86_64"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Result:
    cmd: str
    rc: int
    out: str
    err: str

    def __str__(self) -> str:
        return f"$ {self.cmd}\n(exit {self.rc})\n{self.out}{self.err}"


class VM:
    def __init__(self, image: Path, work: Path, disks: list[Path], memory_mb: int = 1024):
        self.work = work
        self.port = free_udp_port()
        self.console = work / "console.log"
        overlay = work / "root.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
                        str(image / "root.img"), str(overlay)], check=True)
        self.sock_path = work / "agent.sock"
        cmd = [QEMU, "-accel", "tcg", "-cpu", "max", "-m", str(memory_mb), "-smp", "1",
               "-display", "none", "-monitor", "none", "-no-reboot",
               "-kernel", str(image / "vmlinuz"), "-initrd", str(image / "initrd.img"),
               "-append", "console=ttyS0 panic=-1 quiet systemd.show_status=0",
               "-drive", f"file={overlay},if=virtio,format=qcow2",
               "-nic", f"user,model=virtio-net-pci,hostfwd=udp:127.0.0.1:{self.port}-:4433",
               "-serial", f"file:{self.console}",
               "-chardev", f"socket,id=agent,path={self.sock_path},server=on,wait=off",
               "-serial", "chardev:agent"]
        for d in disks:
            cmd += ["-drive", f"file={d},if=virtio,format=raw,readonly=on"]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                     stdout=open(work / "qemu.out", "wb"),
                                     stderr=subprocess.STDOUT)
        self.sock: socket.socket | None = None
        self.buf = b""
        self.next_id = 0
        self.transcript: list[str] = []

    def _connect(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"qemu exited {self.proc.returncode}: {self.tail()}")
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(str(self.sock_path))
                self.sock = s
                return
            except OSError:
                s.close()
                if time.monotonic() > deadline:
                    raise AssertionError("qemu's agent socket never appeared") from None
                time.sleep(0.2)

    def _line(self, timeout: float) -> dict[str, object]:
        assert self.sock is not None
        self.sock.settimeout(timeout)
        while b"\n" not in self.buf:
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                raise AssertionError(f"the VM's agent did not answer within {timeout} s; "
                                     f"console: {self.tail()}") from None
            if not chunk:
                raise AssertionError(f"the agent's socket closed; console: {self.tail()}")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        try:
            obj = json.loads(line)
        except ValueError:
            return {}
        return obj if isinstance(obj, dict) else {}

    def wait_booted(self, timeout: float = 240) -> float:
        """Wait for the agent's ready line (multi-user.target reached); seconds taken."""
        start = time.monotonic()
        self._connect(60)
        while not self._line(timeout).get("ready"):
            pass
        return time.monotonic() - start

    def run(self, cmd: str, timeout: float = 120) -> Result:
        self.next_id += 1
        assert self.sock is not None
        self.sock.sendall(json.dumps({"id": self.next_id, "cmd": cmd,
                                      "timeout": timeout}).encode() + b"\n")
        while True:
            reply = self._line(timeout + 30)
            if reply.get("id") == self.next_id:
                break
        r = Result(cmd, int(reply["rc"]), str(reply["out"]), str(reply["err"]))  # type: ignore[call-overload]
        self.transcript.append(str(r))
        print(r, flush=True)
        return r

    def ok(self, cmd: str, timeout: float = 120) -> str:
        r = self.run(cmd, timeout)
        assert r.rc == 0, str(r)
        return r.out

    def tail(self, n: int = 3000) -> str:
        try:
            return self.console.read_text(errors="replace")[-n:]
        except OSError:
            return "(no console log)"

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.run("systemctl poweroff --no-block", 30)
            except AssertionError:
                pass
            self.sock.close()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def tools_missing() -> list[str]:
    need = [QEMU, "qemu-img", "mmdebstrap", "mkfs.ext4", "dpkg-buildpackage", "dh", "lintian",
            "cpio"]
    return [t for t in need if shutil.which(t) is None]
