"""plasmd's commands (cli.py parses, this decides)."""

from __future__ import annotations

import asyncio
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
        from plasmd import submitcmd

        return submitcmd.submit(home, args)
    if args["dispatch"]:
        from plasmd import dispatchcmd

        return dispatchcmd.main(home, args)
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
