"""The package test's agent inside the VM: one shell command per JSON line.

Reads ``{"id": N, "cmd": "...", "timeout": S}`` lines from a serial port (the host's
end is a UNIX socket QEMU provides) and answers each with one line
``{"id": N, "rc": R, "out": "...", "err": "..."}``. Announces itself with
``{"ready": true}`` once it runs. Only in the test image; never packaged.
"""

import json
import os
import subprocess
import sys
import termios
import tty

MAX_LINE = 1 << 20
MAX_OUT = 256 * 1024


def main() -> int:
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_NOCTTY)
    tty.setraw(fd)
    attrs = termios.tcgetattr(fd)
    attrs[3] &= ~termios.ECHO
    termios.tcsetattr(fd, termios.TCSANOW, attrs)
    rf = os.fdopen(fd, "rb", buffering=0)
    wf = os.fdopen(os.dup(fd), "wb", buffering=0)

    def send(obj: dict) -> None:
        wf.write(json.dumps(obj).encode() + b"\n")

    send({"ready": True})
    buf = b""
    while True:
        chunk = rf.read(4096)
        if not chunk:
            continue
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            try:
                req = json.loads(line[:MAX_LINE])
            except ValueError:
                continue
            if not isinstance(req, dict) or "cmd" not in req:
                continue
            try:
                r = subprocess.run(["/bin/sh", "-c", req["cmd"]], capture_output=True,
                                   timeout=req.get("timeout", 120), stdin=subprocess.DEVNULL)
                rc, out, err = r.returncode, r.stdout, r.stderr
            except subprocess.TimeoutExpired as e:
                rc, out, err = 124, e.stdout or b"", (e.stderr or b"") + b"\nagent: timeout"
            send({"id": req.get("id"), "rc": rc,
                  "out": out[-MAX_OUT:].decode(errors="replace"),
                  "err": err[-MAX_OUT:].decode(errors="replace")})


if __name__ == "__main__":
    sys.exit(main())
