"""Readiness for systemd (``Type=notify``) without libsystemd.

The protocol is one datagram of ``KEY=VALUE`` lines sent to the AF_UNIX socket named
by ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace). The daemon
sends ``READY=1`` once it listens on every address and its control socket is open,
so ``systemctl start plasmd`` returns only then; ``STOPPING=1`` when it starts to
drain. Outside systemd (no ``$NOTIFY_SOCKET``) nothing is sent.

The control socket goes to ``$RUNTIME_DIRECTORY`` when systemd provides one
(``RuntimeDirectory=phase``: ``/run/phase/plasmd.sock``), with a symlink at
``<home>/plasmd.sock`` so that ``plasmd status --home=...`` finds it as before.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path

from phase_core import log

MAX_MESSAGE = 4096  # systemd reads far more; our messages are a few lines


def notify(state: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` to the service manager; True when a datagram was sent.

    A broken socket is logged, not raised: a node that cannot report readiness still
    serves (systemd then times the start out and says so)."""
    env = os.environ if environ is None else environ
    addr = env.get("NOTIFY_SOCKET", "")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    elif not addr.startswith("/"):
        log.get().warning("sdnotify.bad_socket", socket=addr,
                          message="NOTIFY_SOCKET is neither a path nor @abstract; ignored")
        return False
    data = state.encode()[:MAX_MESSAGE]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(addr)
            s.sendall(data)
    except OSError as e:
        log.get().warning("sdnotify.failed", socket=addr.lstrip("\0"), error=str(e))
        return False
    return True


def runtime_socket(home: Path, environ: Mapping[str, str] | None = None) -> Path | None:
    """Where the control socket goes under systemd's ``RuntimeDirectory=``, else None."""
    env = os.environ if environ is None else environ
    first = env.get("RUNTIME_DIRECTORY", "").split(":")[0]
    if not first or not os.path.isabs(first):
        return None
    return Path(first) / "plasmd.sock"


def link_socket(link: Path, target: Path) -> None:
    """Point ``<home>/plasmd.sock`` at the socket in the runtime directory."""
    tmp = link.with_name(link.name + ".new")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)
