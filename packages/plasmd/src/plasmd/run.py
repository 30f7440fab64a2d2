"""plasmd's commands (cli.py parses, this decides)."""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from pathlib import Path
from typing import Any

from phase_core import documents, exitcodes, log, receipt, timefmt, units
from phase_core import home as homes
from phase_core import identity as identities
from phase_core.cli.jsonl import write_record
from phase_core.errors import ConfigError, InputError, MissingInput, PhaseError, UsageError
from phase_core.fsutil import write_atomic
from phase_core.trust import Keyring
from plasmd.receiptlog import LogTampered, ReceiptLog

KEYRING_TEMPLATE = """\
# Keys this node trusts. Add submitters with:
#   phase-key trust --keyring={path} --name=NAME --role=job-submitter --public=HEX
# Roles: job-submitter (may run jobs here), worker, boot-signer.
"""


def dispatch(args: dict[str, Any]) -> int:
    home = homes.resolve(args["--home"])
    for addr in args["--listen"] or ():
        _flag(lambda: _parse_hostport(addr), "--listen")  # noqa: B023 - called at once
    flags = {"mode": args["--mode"], "listen": tuple(args["--listen"]) or None,
             "open": True if args["--open"] else None,
             "workers": _int(args["--workers"], "--workers") if args["--workers"] else None}
    if args["init"]:
        return init(home, flags, args)
    if args["start"]:
        from plasmd import daemon

        return asyncio.run(daemon.run(home, flags))
    if args["status"]:
        from plasmd import control

        st = control.query_home(home)
        if not args["--quiet"]:
            write_record(st)
        return 0
    if args["submit"]:
        return submit(home, args)
    if args["receipts"]:
        return receipts(home, args)
    if args["boot-sign"]:
        return boot_sign(home, args)
    raise UsageError("no command")


def _parse_hostport(text: str) -> tuple[str, int]:
    from plasmd.config import parse_hostport

    return parse_hostport(text)


def _flag(parse: Any, what: str) -> Any:
    """A bad value on the command line is a usage error (64), not bad config (78)."""
    try:
        return parse()
    except (ConfigError, InputError) as e:
        raise UsageError(f"{what}: {e.message}", hint=e.hint) from None


def _node_key(home: Path, more: str = "") -> identities.Identity:
    """The home's node key; a missing one points at `plasmd init`, not `phase-key new`."""
    try:
        return identities.load(homes.key_path(home))
    except MissingInput as e:
        raise MissingInput(f"no node key in {home}", path=str(homes.key_path(home)),
                           hint=f"run `plasmd init --home={home}` first"
                                + (f", {more}" if more else "")) from e


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"{what} must be an integer") from None


def init(home: Path, flags: dict[str, Any], args: dict[str, Any]) -> int:
    from plasmd import config as configs
    from plasmd import daemon

    key = homes.key_path(home)
    cfg_path = daemon.config_path(home)
    if key.exists() and cfg_path.exists():
        if args["--if-missing"]:
            return 0
        raise ConfigError(f"{home} is already set up", hint="use --if-missing in scripts")
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    ident = identities.load_or_create(key)
    if not cfg_path.exists():
        cfg = configs.load(None, env={}, flags=flags)
        write_atomic(cfg_path, cfg.to_toml().encode(), mode=0o600)
    kr = homes.keyring_path(home)
    if not kr.exists():
        write_atomic(kr, KEYRING_TEMPLATE.format(path=kr).encode(), mode=0o644)
    if not args["--quiet"]:
        write_record({"v": 1, "type": "node_init", "home": str(home), "node_id": ident.node_id,
                      "config": str(cfg_path), "keyring": str(kr)})
    return 0


def submit(home: Path, args: dict[str, Any]) -> int:
    from plasm_exec.run import exit_status, limits_from_args, parse_env, read_module
    from plasmd import submit as sub

    peer = _flag(lambda: sub.parse_peer(args["--peer"]), "--peer") if args["--peer"] else None
    if args["--via"] not in ("mdns", "dht", "both"):
        raise UsageError("--via is mdns, dht or both")
    if args["--ephemeral-key"]:
        ident = identities.Identity.generate()
    else:
        ident = _node_key(home, "or pass --ephemeral-key to sign with a throw-away key")
    if args["--jobs"] is not None:  # many signed jobs through a Pool
        from plasmd import submitmany

        if args["<module>"] or peer is None:
            raise UsageError("--jobs takes no <module> and needs --peer",
                             hint="plasmd submit --jobs=FILE --peer=<node-id>@host:port")

        return submitmany.main(home, args, ident, args["--peer"])
    module = read_module(args["<module>"])
    stdin = None
    if args["--stdin"]:
        try:
            stdin = Path(args["--stdin"]).read_bytes()
        except FileNotFoundError:
            raise MissingInput(f"no such file: {args['--stdin']}") from None
    limits = limits_from_args(args)
    env = sub.make_manifest(ident, module, stdin, argv=[Path(args["<module>"]).name,
                                                        *args["<arg>"]],
                            env=parse_env(args["--env"]), limits=limits,
                            deterministic=bool(args["--deterministic"]))
    blobs = {env["body"]["module"]: module}
    if stdin is not None:
        blobs[env["body"]["stdin"]] = stdin
    sub.save_manifest(args["--manifest-out"], env)
    timeout = limits["wall_ms"] / 1000 + 30
    if peer is not None:
        node_id, host, port = peer
        out = asyncio.run(sub.submit(ident, host, port, env, blobs, expected_node_id=node_id,
                                     timeout_s=timeout))
    else:
        dt = units.parse_duration(args["--discover-timeout"], "--discover-timeout") / 1000
        node_id = "discovered"
        out = asyncio.run(sub.submit_anywhere(
            ident, env, blobs, via=args["--via"], bootstrap=args["--bootstrap"],
            interfaces=args["--interface"] or None, discover_timeout_s=dt, timeout_s=timeout))
    body = out.body
    if node_id is None:
        log.get().warning("submit.peer_learned", node_id=out.worker,
                          hint="pin it next time with --peer=<node-id>@host:port")
    if args["--receipt"]:
        write_atomic(Path(args["--receipt"]), (json.dumps(out.receipt) + "\n").encode())
    if not args["--quiet"]:
        if args["--json"]:
            # the same job_result as plasm-exec job's (docs/pipeline.md): the signed
            # receipt travels under "envelope", so phase-verify reads it directly
            write_record({"v": 1, "type": "job_result", "worker": out.worker,
                          "job": body["job"], "ended": body["ended"],
                          "exit_code": body["exit_code"],
                          "stdout_id": body["stdout"], "stderr_id": body["stderr"],
                          "stdout_bytes": body["stdout_bytes"],
                          "stderr_bytes": body["stderr_bytes"],
                          "stdout_b64": base64.b64encode(out.stdout).decode(),
                          "stderr_b64": base64.b64encode(out.stderr).decode(),
                          "envelope": out.receipt})
        else:
            sys.stdout.buffer.write(out.stdout)
            sys.stdout.buffer.flush()
            sys.stderr.buffer.write(out.stderr)
            sys.stderr.buffer.flush()
    return exit_status(body["ended"], body["exit_code"])


def receipts(home: Path, args: dict[str, Any]) -> int:
    from plasmd import daemon

    if args["--repair"]:
        return repair_receipts(home, args)
    path = daemon.receipt_log_path(home)
    node = None
    if args["--verify"]:
        node = _node_key(home).node_id
    kr = Keyring().with_key("self", node, [receipt.ROLE]) if node else None
    count = 0
    for attempt in range(5):  # a running node may append while we read: read again
        before = _log_stamp(path)
        try:
            listed = list(ReceiptLog(path).entries())
            break
        except LogTampered as e:
            if attempt < 4 and _log_stamp(path) != before:
                continue
            raise LogTampered(e.message, hint="if no one tampered with it (a crash, or a "
                              "second daemon on this home), `plasmd receipts --repair` "
                              "keeps every valid entry and moves the rest aside") from None
    for entry in listed:
        rec: dict[str, Any] = {"v": 1, "type": "receipt_entry", "seq": entry.seq,
                               "hash": entry.hash}
        if kr is not None:
            v = documents.verify(entry.receipt, documents.Policy(
                kr, timefmt.now(), expected_type=receipt.TYPE))
            rec["id"] = v.id
            rec["verified"] = True
        body = entry.receipt.get("body", {})
        for k in ("job", "ended", "exit_code", "completed"):
            rec[k] = body.get(k)
        if not args["--quiet"]:
            write_record(rec)
        count += 1
    log.get().info("receipts.listed", count=count, verified=bool(kr))
    return exitcodes.OK


def _log_stamp(path: Path) -> tuple[int, bytes]:
    """What changes when the daemon appends: the log's size and the head's bytes."""
    try:
        size = path.stat().st_size
        head = path.with_name(path.name + ".head").read_bytes()
    except OSError:
        return (-1, b"")
    return size, head


def repair_receipts(home: Path, args: dict[str, Any]) -> int:
    """Keep the valid prefix of the receipt log, move the rest aside (holding the lock)."""
    from plasmd import daemon, homelock

    if not home.is_dir():
        raise MissingInput(f"no home at {home}")
    node = identities.load(homes.key_path(home)).node_id
    kr = Keyring().with_key("self", node, [receipt.ROLE])

    def signed_here(env: dict[str, Any]) -> bool:
        try:
            documents.verify(env, documents.Policy(kr, timefmt.now(),
                                                   expected_type=receipt.TYPE))
            return True
        except PhaseError:
            return False

    with homelock.acquire(home, "plasmd receipts --repair"):
        out = ReceiptLog(daemon.receipt_log_path(home)).salvage(signed_here)
    if out["aside"] or out["head_was"] != out["kept"] - 1:
        log.get().warning("receipts.repaired", **out)
    else:
        log.get().info("receipts.intact", kept=out["kept"])
    if not args["--quiet"]:
        write_record({"v": 1, "type": "receipts_repaired", **out})
    return exitcodes.OK


def boot_sign(home: Path, args: dict[str, Any]) -> int:
    from phase_core.cas import ContentStore
    from plasmd import publish
    from plasmd.provider import sign_boot_manifest

    lifetime = units.parse_duration(args["--lifetime"], "--lifetime") // 1000
    env = sign_boot_manifest(
        kernel=Path(args["--kernel"]), initramfs=Path(args["--initramfs"]),
        cmdline=args["--cmdline"] or "", keys=[Path(k) for k in args["--key"]],
        state_file=publish.boot_dir(home) / "versions.json", channel=args["--channel"],
        arch=args["--arch"], mirrors=args["--mirror"],
        cas=ContentStore(homes.cas_path(home)), manifests_dir=publish.boot_dir(home),
        lifetime_s=lifetime)
    if not args["--quiet"]:
        write_record(env)
    return 0
