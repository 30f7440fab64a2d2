"""Local control: a UNIX socket that answers ``status``.

The socket is ``<home>/plasmd.sock`` with mode 0600. In private mode, which
writes nothing to disk, it is an abstract socket named after the home instead.
Either way the daemon also checks the caller's credentials (SO_PEERCRED): only
the daemon's own user (or root) gets an answer.

Protocol: the client sends one JSON line ``{"v":1,"type":"status"}``; the daemon
answers with one JSON line and closes.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import os
import socket
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from phase_core.errors import Unavailable
from phase_core.oserrors import from_oserror

MAX_REQUEST = 4096


def socket_path(home: Path) -> Path:
    return Path(home) / "plasmd.sock"


def abstract_name(home: Path) -> str:
    """The abstract-namespace socket name private mode uses for ``home``."""
    digest = hashlib.sha256(str(Path(home).resolve()).encode()).hexdigest()[:24]
    return f"\0phase-plasmd-{digest}"


def _peer_allowed(writer: asyncio.StreamWriter) -> bool:
    sock = writer.get_extra_info("socket")
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (OSError, AttributeError):
        return False
    _, uid, _ = struct.unpack("3i", creds)
    return bool(uid == os.getuid() or uid == 0)


async def serve_abstract(name: str, status: Callable[[], dict[str, Any]]
                         ) -> asyncio.AbstractServer:
    """The abstract socket; a second private-mode node for the same home is refused."""
    from plasmd.homelock import HomeInUse

    try:
        return await asyncio.start_unix_server(lambda r, w: _client(r, w, status), path=name)
    except OSError as e:
        if e.errno != errno.EADDRINUSE:
            raise
    try:
        pid = await asyncio.to_thread(lambda: query(name, 5.0).get("pid", "unknown"))
    except (Unavailable, ValueError):
        pid = "unknown"
    raise HomeInUse(f"a private-mode plasmd (pid {pid}) already runs for this home "
                    f"(control socket @{name[1:]})", hint="stop it first, or use another --home")


async def serve(path: Path, status: Callable[[], dict[str, Any]]) -> asyncio.AbstractServer:
    path = Path(path)
    if path.exists() or path.is_symlink():
        path.unlink()
    old = os.umask(0o177)  # the socket is created 0600
    try:
        server = await asyncio.start_unix_server(lambda r, w: _client(r, w, status), path=str(path))
    except OSError as e:  # a read-only or full home: exit 74 naming the socket
        raise from_oserror(e, path, "create the control socket") from None
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    return server


async def _client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                  status: Callable[[], dict[str, Any]]) -> None:
    try:
        if not _peer_allowed(writer):
            return
        line = await asyncio.wait_for(reader.readline(), 5)
        try:
            req = json.loads(line[:MAX_REQUEST])
        except ValueError:
            req = {}
        if isinstance(req, dict) and req.get("type") == "status":
            reply = status()
        else:
            reply = {"v": 1, "type": "error", "error": "bad_request",
                     "message": "send {\"v\":1,\"type\":\"status\"}"}
        writer.write(json.dumps(reply, separators=(",", ":")).encode() + b"\n")
        await writer.drain()
    except (TimeoutError, ConnectionError):
        pass
    finally:
        writer.close()


def query_home(home: Path, timeout_s: float = 5.0) -> dict[str, Any]:
    """Status of the daemon running for ``home`` (its socket file, else private mode's)."""
    path = socket_path(home)
    if path.exists():
        return query(str(path), timeout_s)
    try:
        return query(abstract_name(home), timeout_s)
    except Unavailable:
        raise Unavailable(f"no plasmd is running for the home {home}",
                          hint="start one with `plasmd start`") from None


def query(path: str, timeout_s: float = 5.0) -> dict[str, Any]:
    """Ask a running daemon for its status (blocking client)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout_s)
    try:
        s.connect(path)
        s.sendall(b'{"v":1,"type":"status"}\n')
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except (FileNotFoundError, ConnectionRefusedError):
        raise Unavailable(f"no plasmd is running with its socket at {path.lstrip(chr(0))}",
                          hint="start one with `plasmd start`") from None
    except OSError as e:
        raise Unavailable(f"cannot reach plasmd at {path}: {e}") from None
    finally:
        s.close()
    reply: dict[str, Any] = json.loads(data)
    return reply
