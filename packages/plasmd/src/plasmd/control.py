"""Local control: the UNIX socket of the local node API (docs/local-api.md).

The socket is ``<home>/plasmd.sock`` with mode 0600 (0660 and owned by the group
when config.toml names a ``control_group``). In private mode, which writes nothing
to disk, it is an abstract socket named after the home instead. Either way the
daemon also checks the caller's credentials (SO_PEERCRED): only the daemon's own
user, root, and members of the control group get an answer (``plasmd.localapi``).

The simplest request is ``{"v":1,"type":"status"}``, answered with one line.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from phase_core.errors import Unavailable
from phase_core.oserrors import from_oserror

MAX_LINE = 8 << 20  # a request line, inline bytes included (plasmd.localapi)


def socket_path(home: Path) -> Path:
    return Path(home) / "plasmd.sock"


def abstract_name(home: Path) -> str:
    """The abstract-namespace socket name private mode uses for ``home``."""
    digest = hashlib.sha256(str(Path(home).resolve()).encode()).hexdigest()[:24]
    return f"\0phase-plasmd-{digest}"


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def serve_abstract(name: str, handler: Handler) -> asyncio.AbstractServer:
    """The abstract socket; a second private-mode node for the same home is refused."""
    from plasmd.homelock import HomeInUse

    try:
        return await asyncio.start_unix_server(handler, path=name, limit=MAX_LINE)
    except OSError as e:
        if e.errno != errno.EADDRINUSE:
            raise
    try:
        pid = await asyncio.to_thread(lambda: query(name, 5.0).get("pid", "unknown"))
    except (Unavailable, ValueError):
        pid = "unknown"
    raise HomeInUse(f"a private-mode plasmd (pid {pid}) already runs for this home "
                    f"(control socket @{name[1:]})", hint="stop it first, or use another --home")


async def serve(path: Path, handler: Handler, group: int | None = None
                ) -> asyncio.AbstractServer:
    """The socket file, 0600 (0660 owned by ``group`` when one is given)."""
    path = Path(path)
    if path.exists() or path.is_symlink():
        path.unlink()
    old = os.umask(0o177)  # the socket is created 0600
    try:
        server = await asyncio.start_unix_server(handler, path=str(path), limit=MAX_LINE)
    except OSError as e:  # a read-only or full home: exit 74 naming the socket
        raise from_oserror(e, path, "create the control socket") from None
    finally:
        os.umask(old)
    if group is None:
        os.chmod(path, 0o600)
    else:
        try:
            os.chown(path, -1, group)
        except OSError as e:
            server.close()
            raise from_oserror(e, path, "give the control socket to its group") from None
        os.chmod(path, 0o660)
    return server


def group_id(name: str) -> int | None:
    """The gid of config.toml's ``control_group`` (None when it is empty)."""
    if not name:
        return None
    import grp

    from phase_core.errors import ConfigError

    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise ConfigError(f"control_group {name!r} is not a group on this system",
                          hint="create it (groupadd) or leave control_group empty") from None


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
