"""``plasmd start``: the node daemon's lifecycle.

Start: load identity, keyring and config (private mode: an ephemeral identity and a
tmpfs home, nothing persistent), take the home's lock (one daemon per home, see
homelock.py; a second start exits 75 naming the running pid), recover and verify
the receipt log (a damaged one stops the start with a pointer to
``plasmd receipts --repair``), listen on
every configured address, open the control socket, print one ``node_started``
record on stdout. SIGHUP reloads the keyring and config. SIGTERM (or SIGINT)
stops accepting jobs, lets the ones in flight finish and deliver their results,
then closes and exits 0.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any

from phase_core import home as homes
from phase_core import identity as identities
from phase_core import log
from phase_core.cas import ContentStore
from phase_core.cli.jsonl import write_record
from phase_core.errors import ConfigError, MissingInput
from phase_core.state import StateStore
from phase_core.trust import Keyring
from plasmd import config as configs
from plasmd import control, homelock, publish, sdnotify
from plasmd.config import Config, parse_hostport
from plasmd.discovery import Discovery
from plasmd.localapi import LocalApi
from plasmd.memlog import MemoryReceiptLog
from plasmd.node import Node
from plasmd.receiptlog import LogTampered, ReceiptLog


def config_path(home: Path) -> Path:
    return Path(home) / "config.toml"


def receipt_log_path(home: Path) -> Path:
    return Path(home) / "receipts.jsonl"


def load_keyring(home: Path) -> Keyring:
    path = homes.keyring_path(home)
    return Keyring.load(path) if path.exists() else Keyring()


def check_mode(cfg: Config) -> None:
    """Local mode listens on LAN addresses only; the mode never changes silently."""
    if cfg.mode != "local":
        return
    for addr in cfg.listen:
        host, _ = parse_hostport(addr)
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            raise ConfigError(f"local mode needs IP addresses to listen on, not {host!r}"
                              ) from None
        if not (ip.is_private or ip.is_loopback or ip.is_link_local):
            raise ConfigError(f"local mode listens on LAN addresses only; {host} is public",
                              hint="use mode = \"internet\" to listen on a public address")


async def run(home: Path, flags: dict[str, Any]) -> int:
    cfg = configs.load(config_path(home), flags=flags)
    check_mode(cfg)
    keyring = load_keyring(home)
    tmp_home: Path | None = None
    lock: homelock.HomeLock | None = None
    receipts: Any
    if cfg.mode == "private":
        shm = Path("/dev/shm")  # noqa: S108 - a tmpfs; mkdtemp makes a private dir
        tmp_home = Path(tempfile.mkdtemp(prefix="plasmd-private-",
                                         dir=str(shm) if shm.is_dir() else None))
        ident = identities.Identity.generate()
        state, receipts, work_home = StateStore(None), MemoryReceiptLog(), tmp_home
    else:
        try:
            ident = identities.load(homes.key_path(home))
        except MissingInput:
            raise MissingInput(f"no node key in {home}", hint="run `plasmd init` first, "
                               "or `plasmd start --mode=private` for a throw-away node"
                               ) from None
        lock = homelock.acquire(home)
        lock.describe(socket=str(control.socket_path(home)))
        state = StateStore(homes.state_path(home))
        try:
            receipts = open_receipt_log(home)
        except BaseException:
            lock.release()
            raise
        work_home = home
    try:
        return await _serve(work_home, home, cfg, ident, keyring, state, receipts, flags)
    finally:
        if tmp_home is not None:
            shutil.rmtree(tmp_home, ignore_errors=True)
        if lock is not None:
            lock.release()


async def _serve_control(home: Path, api: LocalApi) -> tuple[Any, str]:
    """The control socket: in systemd's runtime directory when there is one (with a
    symlink at ``<home>/plasmd.sock`` for clients), else in the home."""
    where = sdnotify.runtime_socket(home)
    if where is None:
        return await control.serve(control.socket_path(home), api.client, api.group_gid), \
            str(control.socket_path(home))
    ctl = await control.serve(where, api.client, api.group_gid)
    sdnotify.link_socket(control.socket_path(home), where)
    return ctl, str(where)


def open_receipt_log(home: Path) -> ReceiptLog:
    """The home's receipt log after crash recovery; refuse to run on a damaged one.

    The caller holds the home's lock. A torn last line (a crash mid-append) is moved
    aside and logged; any other damage stops the start.
    """
    receipts = ReceiptLog(receipt_log_path(home))
    try:
        cut = receipts.repair()
        if cut:
            log.get().warning("receipts.torn_tail_moved_aside", bytes=cut,
                              message="a crash left a half-written receipt entry; it was "
                                      "never acknowledged and is kept in the .aside- file")
        for _ in receipts.entries():
            pass
    except LogTampered as e:
        raise LogTampered(f"the receipt log {receipts.path} is damaged: {e.message}",
                          hint="stop here if you suspect tampering; otherwise run `plasmd "
                               f"receipts --repair --home={home}` to keep every valid entry "
                               "and move the rest to a .aside- file next to the log") from None
    return receipts


async def _serve(work_home: Path, home: Path, cfg: Config, ident: identities.Identity,
                 keyring: Keyring, state: StateStore, receipts: Any,
                 flags: dict[str, Any]) -> int:
    from phase_core.aio.quic import listen

    tmp_home_used = work_home != home

    node = Node(identity=ident, config=cfg, keyring=keyring,
                cas=ContentStore(homes.cas_path(work_home)), state=state, receipts=receipts,
                home=work_home)
    node.start_job_processes()
    servers = []
    disc = Discovery()
    node.discovery = disc
    pub = publish.load(home)
    node.published = pub
    node.public_blobs |= pub.artifacts
    try:
        if cfg.boot_http:
            bh, bp = parse_hostport(cfg.boot_http)
            publish.start_http(pub, home, node.cas if not tmp_home_used else
                               ContentStore(homes.cas_path(home)), bh, bp)
        for addr in cfg.listen:
            host, port = parse_hostport(addr)
            server = await listen(host, port, ident, node.handle,  # keyring peers first
                                  priority=lambda peer: peer in node.keyring.keys)
            servers.append(server)
        listening = [f"quic://{s.host}:{s.port}" for s in servers]
        await disc.start(node, cfg, None if tmp_home_used else home,
                         [s.port for s in servers])
        def status() -> dict[str, Any]:
            return {**node.status(servers[0] if servers else None), "pid": os.getpid()}

        api = LocalApi(node, status, control.group_id(cfg.control_group))
        if tmp_home_used:
            ctl = await control.serve_abstract(control.abstract_name(home), api.client)
            ctl_where = "@" + control.abstract_name(home)[1:]
        else:
            ctl, ctl_where = await _serve_control(home, api)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)

        def reload() -> None:
            try:
                new = configs.load(config_path(home), flags=flags)
                if new.mode != cfg.mode or new.listen != cfg.listen:
                    log.get().warning("node.reload_needs_restart",
                                      message="mode and listen change only on restart")
                node.reload(load_keyring(home), new)
            except Exception as e:  # a bad edit must not kill a running node
                log.get().error("node.reload_failed", error=type(e).__name__, message=str(e))

        loop.add_signal_handler(signal.SIGHUP, reload)
        write_record({"v": 1, "type": "node_started", "node_id": ident.node_id,
                      "mode": cfg.mode, "open": cfg.open, "listen": listening,
                      "addresses": node.addresses, "boot_http": pub.url,
                      "control": ctl_where, "home": str(work_home)})
        log.get().info("node.started", node_id=ident.node_id, mode=cfg.mode,
                       listen=listening, open=cfg.open)
        sdnotify.notify(f"READY=1\nSTATUS=listening on {' '.join(listening)}\n"
                        f"MAINPID={os.getpid()}")
        await stop.wait()
        sdnotify.notify("STOPPING=1")
        log.get().info("node.draining", running=node.running, queued=node.queued)
        await node.drain()
        await api.close()
        ctl.close()
        if not tmp_home_used:
            control.socket_path(home).unlink(missing_ok=True)
            if (where := sdnotify.runtime_socket(home)) is not None:
                where.unlink(missing_ok=True)
        log.get().info("node.stopped", jobs_done=node.counters.c["jobs_done"])
        return 0
    finally:
        pub.stop()
        await disc.close()
        for s in servers:
            await s.close()
