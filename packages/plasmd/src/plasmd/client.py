"""Run Phase jobs from Python (docs/python-client.md).

    from plasmd.client import submit
    r = submit("hello.wasm", stdin=b"Hello, World")
    print(r.stdout.decode(), r.verify()["worker"])

Three ways to a result, chosen per call by ``Client.mode``:

- **daemon**: a plasmd runs for the home: the job goes over its control socket
  (the local node API, docs/local-api.md) and runs on that node, on a named peer
  over the node's warm connections, or on any node matching some capabilities.
- **direct**: no daemon: the job runs in this process through plasm-exec's
  library (``where`` = this machine), or goes straight to the peer over
  QUIC/Noise, signed with the home's node key (or the ``key`` given).
- **auto** (the default): daemon when one answers on the home's socket, else direct.

Every ``Result`` comes with the worker's signed receipt, already verified by
whoever received it (the daemon, or this process); ``Result.verify()`` checks it
again here, against the bytes in hand. This module imports only the standard
library until a job needs more, so that ``plasmd submit`` starts fast.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from plasmd import clientlocal as local
from plasmd.result import NodeError, Result, exit_status

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["Client", "NodeError", "Result", "exit_status", "submit", "submit_async"]
Progress = Callable[[dict[str, Any]], None]


class Client:
    """A client for one Phase home (default: ``$PHASE_HOME``, else
    ``~/.local/share/phase``).

    ``mode``: ``"auto"``, ``"daemon"`` or ``"direct"`` (above). ``key``: a key file
    (or a ``phase_core.identity.Identity``) to sign jobs with instead of the home's
    node key. ``timeout_s``: on top of each job's wall-clock limit."""

    def __init__(self, home: str | Path | None = None, *, mode: str = "auto",
                 key: Any = None, timeout_s: float = 30.0) -> None:
        if mode not in ("auto", "daemon", "direct"):
            raise ValueError("mode is auto, daemon or direct")
        self.home: str = local.home_dir(home)
        self.mode = mode
        self.key = key
        self.timeout_s = timeout_s

    # -- the job's request ---------------------------------------------------------
    def request(self, module: str | Path | bytes, *, stdin: str | Path | bytes | None = None,
                args: Sequence[str] = (), env: dict[str, str] | None = None,
                limits: dict[str, int] | None = None, deterministic: bool = False,
                peer: str | None = None, capabilities: dict[str, Any] | None = None,
                discovery: dict[str, Any] | None = None) -> dict[str, Any]:
        """The local node API's ``submit`` request for a job (docs/local-api.md).
        Paths are made absolute; bytes travel inline."""
        req: dict[str, Any] = {"v": 1, "type": "submit", "module": _blob(module)}
        if stdin is not None:
            req["stdin"] = _blob(stdin)
        if not isinstance(module, bytes):
            req["argv0"] = os.path.basename(os.fspath(module))
        if args:
            req["args"] = list(args)
        if env:
            req["env"] = dict(env)
        if limits:
            req["limits"] = dict(limits)
        if deterministic:
            req["deterministic"] = True
        if peer is not None and capabilities is not None:
            raise ValueError("give peer or capabilities, not both")
        if peer is not None:
            req["where"] = {"peer": peer}
        elif capabilities is not None or discovery:
            req["where"] = {"capabilities": dict(capabilities or {}), **(discovery or {})}
        return req

    # -- sync ----------------------------------------------------------------------
    def submit(self, module: str | Path | bytes, *, on_progress: Progress | None = None,
               **kw: Any) -> Result:
        """Run one job and return its verified result (a guest that fails is a result,
        not an exception; a job that cannot run raises ``NodeError`` or another
        ``phase_core.errors.PhaseError``)."""
        req = self.request(module, **kw)
        if self.mode != "direct":
            sock = local.connect(self.home, required=self.mode == "daemon")
            if sock is not None:
                sent = self._for_daemon(req, sock)
                try:
                    return local.call(sock, sent, on_progress, self._deadline(req))
                except NodeError as e:
                    if not local.unseen_paths(e, sent):
                        raise
                # the node does not see our files (another mount namespace, e.g.
                # systemd's PrivateTmp or ProtectHome): send the bytes instead
                sock = local.connect(self.home, required=True)
                assert sock is not None
                return local.call(sock, local.inline(sent), on_progress,
                                  self._deadline(req))
        import asyncio

        return asyncio.run(self._direct(req, on_progress))

    # -- async ---------------------------------------------------------------------
    async def submit_async(self, module: str | Path | bytes, *,
                           on_progress: Progress | None = None, **kw: Any) -> Result:
        """``submit`` for asyncio programs (the job's I/O never blocks the loop)."""
        req = self.request(module, **kw)
        if self.mode != "direct":
            sent: list[dict[str, Any]] = []

            def build(sock: Any) -> dict[str, Any]:
                sent.append(self._for_daemon(req, sock))
                return sent[-1]

            try:
                got = await local.call_async(self.home, build, on_progress,
                                             self._deadline(req),
                                             required=self.mode == "daemon")
            except NodeError as e:
                if not local.unseen_paths(e, sent[-1]):
                    raise
                got = await local.call_async(  # as in submit: the bytes instead
                    self.home, lambda _: local.inline(sent[-1]), on_progress,
                    self._deadline(req), required=True)
            if got is not None:
                return got
        return await self._direct(req, on_progress)

    # -- helpers -------------------------------------------------------------------
    def _deadline(self, req: dict[str, Any]) -> float:
        return int(req.get("limits", {}).get("wall_ms", 30000)) / 1000 + self.timeout_s + 30

    def _for_daemon(self, req: dict[str, Any], sock: Any) -> dict[str, Any]:
        """Owner of the daemon: paths and the node's key. Anyone else: bytes inline
        and a manifest signed here."""
        if self.key is None and local.is_owner(sock):
            return {**req, "submitter": "node"}
        req = local.inline(req)
        from plasmd import clientdirect

        ident = clientdirect.identity(self.home, self.key)
        return clientdirect.signed_request(req, ident)

    async def _direct(self, req: dict[str, Any], on_progress: Progress | None) -> Result:
        from plasmd import clientdirect

        return await clientdirect.run(self.home, self.key, req, self.timeout_s, on_progress)


def submit(module: str | Path | bytes, *, home: str | Path | None = None,
           mode: str = "auto", key: Any = None, **kw: Any) -> Result:
    """``Client(home, mode=mode, key=key).submit(module, **kw)``."""
    return Client(home, mode=mode, key=key).submit(module, **kw)


def submit_async(module: str | Path | bytes, *, home: str | Path | None = None,
                 mode: str = "auto", key: Any = None, **kw: Any) -> Awaitable[Result]:
    """``Client(home, mode=mode, key=key).submit_async(module, **kw)``."""
    return Client(home, mode=mode, key=key).submit_async(module, **kw)


def _blob(x: str | Path | bytes) -> dict[str, str]:
    if isinstance(x, bytes):
        return {"b64": base64.b64encode(x).decode("ascii")}
    from plasmd.warmsubmit import node_path, read_capped

    path = node_path(os.fspath(x))  # /dev/stdin would be the node's own stdin
    if path is None:
        return {"b64": base64.b64encode(read_capped(os.fspath(x))).decode("ascii")}
    return {"path": path}
