"""``plasmd submit``: the command, on top of the Python client (``plasmd.client``).

When a plasmd runs for the home, the job goes to it over the control socket
(the local node API) and the daemon's warm connections carry it; otherwise this
process dials the peer itself (QUIC/Noise, then a prompt CONNECTION_CLOSE).

Starting fast matters here (docs/performance.md, "Cold and local submit"): the
common forms of the command line are parsed by hand (``plasmd.fastargs``; anything
else goes through docopt as before), the common warm forms never get here
(``plasmd.warmsubmit`` handles them with the fewest imports), nothing is imported
before it is needed, and the process ends with ``os._exit`` once its output is
flushed (``finish``).
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

from plasmd.fastargs import fast_args, peer_form
from plasmd.warmsubmit import finish, node_path

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["fast_args", "fast_main", "finish", "submit"]


def fast_main(argv: list[str]) -> int | None:
    """Run ``plasmd submit`` from a hand-parsed command line; None: not handled here."""
    args = fast_args(argv)
    if args is None:
        return None
    from phase_core import log
    from phase_core.errors import PhaseError
    from plasmd.clientlocal import home_dir

    logger = log.configure("plasmd", args["--verbose"], args["--quiet"], "json")
    try:
        logger.format = log.resolve_format(None, os.environ.get("PHASE_LOG_FORMAT"),
                                           logger.stream)
    except ValueError:
        return None  # the runner reports a bad PHASE_LOG_FORMAT (78)
    try:
        return submit(home_dir(args["--home"]), args)
    except PhaseError as e:
        logger.error("plasmd.failed", **e.to_record())
        return e.exit_code
    except KeyboardInterrupt:
        logger.warning("plasmd.interrupted")
        return 130


def submit(home: str | Path, args: dict[str, Any]) -> int:
    from phase_core.errors import PhaseError, UsageError
    from plasmd.client import Client

    if args["--via"] not in ("mdns", "dht", "both"):
        raise UsageError("--via is mdns, dht or both")
    if args.get("--jobs") is not None:  # many signed jobs through a Pool
        return _submit_many(home, args)
    peer = args["--peer"]
    if peer is not None and not peer_form(peer):
        from plasmd.run import _flag
        from plasmd.submit import parse_peer

        _flag(lambda: parse_peer(peer), "--peer")  # says what is wrong (64)
    key = None
    if args["--ephemeral-key"]:
        from phase_core.identity import Identity

        key = Identity.generate()
    else:
        _need_key_or_daemon(home)
    kw: dict[str, Any] = {"args": args["<arg>"]}
    if any(args[k] for k in ("--max-memory", "--fuel", "--timeout", "--max-output")):
        from plasm_exec.run import limits_from_args

        kw["limits"] = limits_from_args(args)
    if args["--env"]:
        from plasm_exec.run import parse_env

        kw["env"] = parse_env(args["--env"])
    if args["--deterministic"]:
        kw["deterministic"] = True
    if args["--stdin"]:
        path = args["--stdin"]
        if node_path(path) is not None:
            kw["stdin"] = node_path(path)  # the node reads it (or this process, direct)
        else:  # a pipe (/dev/stdin, <(...)): its bytes, read here, once
            try:
                with open(path, "rb") as f:
                    kw["stdin"] = f.read()
            except FileNotFoundError:
                from phase_core.errors import MissingInput

                raise MissingInput(f"no such file: {path}") from None
    module: str | bytes = args["<module>"]
    if node_path(module) is None or os.path.abspath(module).startswith(("/proc/", "/dev/")):
        from plasm_exec.run import read_module

        module = read_module(module)  # a pipe's bytes, or it says what is wrong
    if peer is not None:
        kw["peer"] = peer
    else:
        from phase_core import units

        dt = units.parse_duration(args["--discover-timeout"], "--discover-timeout")
        kw["discovery"] = {"via": args["--via"], "bootstrap": list(args["--bootstrap"]),
                           "discover_timeout_ms": max(1, dt)}
        if args["--interface"]:
            kw["discovery"]["interfaces"] = list(args["--interface"])
    manifest_out = args["--manifest-out"]

    def on_progress(rec: dict[str, Any]) -> None:
        if rec.get("type") == "job_accepted" and manifest_out:
            _write(manifest_out, rec["manifest"])

    # a throw-away key has no daemon to sign with: this process submits directly
    client = Client(home, mode="direct" if key is not None else "auto", key=key)
    try:
        res = client.submit(module, on_progress=on_progress, **kw)
    except PhaseError as e:
        if peer is None and e.slug == "unavailable" and e.message.startswith("no node"):
            # the home's node found none: say it in this command's words, as the path
            # without a node does (the node's hint names local-API fields)
            from plasmd.submit import NO_NODE_HINT

            e.hint = NO_NODE_HINT
        raise
    if peer is not None and "@" not in peer:
        from phase_core import log

        log.get().warning("submit.peer_learned", node_id=res.worker,
                          hint="pin it next time with --peer=<node-id>@host:port")
    if args["--receipt"]:
        _write(args["--receipt"], res.receipt)
    if not args["--quiet"]:
        if args["--json"]:
            # the same job_result as plasm-exec job's (docs/pipeline.md): the signed
            # receipt travels under "envelope", so phase-verify reads it directly
            from phase_core.cli.jsonl import write_record

            write_record(res.record())
        else:
            sys.stdout.buffer.write(res.stdout)
            sys.stdout.buffer.flush()
            sys.stderr.buffer.write(res.stderr)
            sys.stderr.buffer.flush()
    return res.status


def _submit_many(home: str | Path, args: dict[str, Any]) -> int:
    from pathlib import Path

    from phase_core.errors import UsageError
    from plasmd import submitmany

    if args["<module>"] or not args["--peer"]:
        raise UsageError("--jobs takes no <module> and needs --peer",
                         hint="plasmd submit --jobs=FILE --peer=<node-id>@host:port")
    if args["--ephemeral-key"]:
        from phase_core.identity import Identity

        ident = Identity.generate()
    else:
        from plasmd.run import _node_key

        ident = _node_key(Path(home), "or pass --ephemeral-key to sign with a throw-away key")
    return submitmany.main(Path(home), args, ident, args["--peer"])


def _write(path: str, doc: dict[str, Any]) -> None:
    import json
    from pathlib import Path

    from phase_core.fsutil import write_atomic

    write_atomic(Path(path), (json.dumps(doc) + "\n").encode())


def _need_key_or_daemon(home: str | Path) -> None:
    """The job is signed with the home's node key, here or by the home's running
    node (a private-mode node has no key file): with neither, say how to get one."""
    if os.path.exists(os.path.join(home, "key")):
        return
    from plasmd import clientlocal

    sock = clientlocal.connect(home, required=False)
    if sock is not None:
        sock.close()
        return
    from phase_core.errors import MissingInput

    raise MissingInput(f"no node key in {home}", path=os.path.join(home, "key"),
                       hint=f"run `plasmd init --home={home}` first, or pass "
                            "--ephemeral-key to sign with a throw-away key")
