"""The Python client's side of the local node API (docs/local-api.md): find the
home's daemon, send one ``submit``, read its answers. Standard library only (plus
phase-core's error classes), so that a warm ``plasmd submit`` starts fast."""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from phase_core.errors import ProtocolViolation, Timeout, Unavailable
from plasmd.result import NodeError, Result
from plasmd.warmsubmit import home_dir as home_dir  # the one definition, re-exported

if TYPE_CHECKING:
    from pathlib import Path

MAX_ANSWER = 64 << 20  # a job_result line: the output limit (16 MiB default), base64
Progress = Callable[[dict[str, Any]], None] | None


def addresses(home: str | Path) -> list[str]:
    """Where the home's daemon listens: its socket file, else (private mode) the
    abstract socket named after the home (as ``plasmd.control``)."""
    path = os.path.join(home, "plasmd.sock")
    if os.path.exists(path):
        return [path]
    import hashlib

    digest = hashlib.sha256(os.path.realpath(home).encode()).hexdigest()[:24]
    return [f"\0phase-plasmd-{digest}"]


def no_daemon(home: str | Path) -> None:
    raise Unavailable(f"no plasmd is running for the home {home}",
                      hint="start one with `plasmd start`, or use mode=\"direct\"")


def connect(home: str | Path, *, required: bool) -> socket.socket | None:
    """A connected socket to the home's daemon, or None when none runs."""
    for addr in addresses(home):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(addr)
            return s
        except (FileNotFoundError, ConnectionRefusedError):
            s.close()
        except OSError as e:
            s.close()
            if required:
                raise Unavailable(f"cannot reach plasmd at {addr.lstrip(chr(0))}: "
                                  f"{e.strerror}") from None
    if required:
        no_daemon(home)
    return None


def is_owner(sock: socket.socket) -> bool:
    """We run as the daemon's user (or root): it may read our paths and sign for us."""
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return False
    _, uid, _ = struct.unpack("3i", creds)
    return os.getuid() in (uid, 0)


def inline(req: dict[str, Any]) -> dict[str, Any]:
    """The request with files read and sent as bytes (for a daemon of another user)."""
    out = dict(req)
    for k in ("module", "stdin"):
        spec = out.get(k)
        if isinstance(spec, dict) and "path" in spec:
            try:
                with open(spec["path"], "rb") as f:
                    data = f.read()
            except FileNotFoundError:
                from phase_core.errors import MissingInput

                raise MissingInput(f"no such file: {spec['path']}") from None
            out[k] = {"b64": base64.b64encode(data).decode("ascii")}
    return out


def unseen_paths(e: NodeError, req: dict[str, Any]) -> bool:
    """The node could not find a file we named that we can read: it runs in another
    mount namespace (systemd's PrivateTmp, ProtectHome), so send the bytes."""
    if e.slug != "missing_input":
        return False
    return any(isinstance(spec, dict) and os.path.isfile(spec.get("path", ""))
               for spec in (req.get("module"), req.get("stdin")))


def _line(req: dict[str, Any]) -> bytes:
    return json.dumps(req, separators=(",", ":")).encode() + b"\n"


class _Answers:
    """Reads a submit's answers: progress to the callback, then the result or error."""

    def __init__(self, on_progress: Progress) -> None:
        self.on_progress = on_progress
        self.manifest: dict[str, Any] | None = None

    def take(self, line: bytes) -> Result | None:
        if not line:
            raise Unavailable("plasmd closed the connection before the job's result",
                              hint="see the node's log (is it shutting down?)")
        if len(line) > MAX_ANSWER or not line.endswith(b"\n"):
            raise ProtocolViolation(f"an answer line from plasmd is over {MAX_ANSWER} bytes")
        try:
            rec = json.loads(line)
        except ValueError:
            raise ProtocolViolation("plasmd sent a line that is not JSON") from None
        kind = rec.get("type") if isinstance(rec, dict) else None
        if kind == "job_accepted":
            self.manifest = rec.get("manifest")
            if self.on_progress is not None:
                self.on_progress(rec)
        elif kind == "job_progress":
            if self.on_progress is not None:
                self.on_progress(rec)
        elif kind == "job_result":
            return Result.from_record(rec, self.manifest)
        elif kind == "error":
            raise NodeError(rec)
        return None


def call(sock: socket.socket, req: dict[str, Any], on_progress: Progress,
         timeout_s: float) -> Result:
    """Send ``req`` (a submit) on ``sock`` and wait for its result (blocking)."""
    answers = _Answers(on_progress)
    try:
        sock.settimeout(timeout_s)
        sock.sendall(_line(req))
        with sock.makefile("rb") as f:
            while True:
                got = answers.take(f.readline(MAX_ANSWER + 1))
                if got is not None:
                    return got
    except TimeoutError:
        raise Timeout(f"no result from plasmd within {timeout_s:.0f} s") from None
    except (BrokenPipeError, ConnectionResetError):
        raise Unavailable("plasmd closed the connection before the job's result") from None
    finally:
        sock.close()


async def call_async(home: str | Path, build: Callable[[Any], dict[str, Any]],
                     on_progress: Progress, timeout_s: float, *, required: bool
                     ) -> Result | None:
    """``call`` on asyncio streams; None when no daemon runs (and none is required)."""
    import asyncio

    for addr in addresses(home):
        try:
            reader, writer = await asyncio.open_unix_connection(addr, limit=MAX_ANSWER + 1)
        except (FileNotFoundError, ConnectionRefusedError):
            continue
        try:
            answers = _Answers(on_progress)
            writer.write(_line(build(writer.get_extra_info("socket"))))
            async with asyncio.timeout(timeout_s):
                await writer.drain()
                while True:
                    try:
                        line = await reader.readline()
                    except ValueError:
                        raise ProtocolViolation(
                            f"an answer line from plasmd is over {MAX_ANSWER} bytes") from None
                    got = answers.take(line)
                    if got is not None:
                        return got
        except TimeoutError:
            raise Timeout(f"no result from plasmd within {timeout_s:.0f} s") from None
        finally:
            writer.close()
    if required:
        no_daemon(home)
    return None
