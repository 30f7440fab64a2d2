"""How a running node makes itself findable: the DHT (internet mode) and mDNS.

- internet: join the DHT through ``bootstrap`` peers, publish the signed node
  record under its capability keys, answer ``dht_*`` requests, keep the routing
  table in ``<home>/dht.json``; and advertise on mDNS.
- local: advertise on mDNS only (LAN addresses only; no DHT).
- private: advertise on mDNS (nothing is written to disk).

mDNS interfaces are explicit: ``mdns_interfaces`` from the config, else the
interfaces that carry a listen address (``0.0.0.0``: every up, non-loopback one).
A node that listens on loopback only advertises nowhere: mDNS never leaves by an
interface the operator did not put the node on.
"""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path
from typing import Any

from phase_core import log
from phase_core.errors import ConfigError, PhaseError
from plasmd.config import Config, parse_hostport

RECORD_LIFETIME_S = 3600
READVERTISE_S = 1200


def upkeep_interval() -> float:
    """DHT upkeep period (republish, refresh, expiry); PHASE_DHT_UPKEEP_S shortens it
    for tests and small labs."""
    import os

    try:
        return max(0.5, float(os.environ.get("PHASE_DHT_UPKEEP_S", "30")))
    except ValueError:
        return 30.0


def listen_addresses(cfg: Config, ports: list[int]) -> tuple[list[str], list[str]]:
    """(dialable host:port addresses for the node record, IPv4s to advertise mDNS on)."""
    from phase_core.aio import mdns
    from phase_core.protocol.dht import join_address

    addrs: list[str] = []
    mdns_ips: list[str] = []
    for spec, port in zip(cfg.listen, ports, strict=True):
        host, _ = parse_hostport(spec)
        ip = ipaddress.ip_address(host)
        if ip.is_unspecified:
            try:
                ips = mdns.resolve_interfaces(None)
            except PhaseError as e:
                # Start anyway: the node is reachable at whatever address a peer
                # used, it just cannot name its addresses in its record.
                if not isinstance(e, ConfigError):
                    log.get().warning("node.addresses_unknown", **e.to_record())
                ips = []
            addrs += [join_address(i, port) for i in ips]
            mdns_ips += ips
        else:
            addrs.append(join_address(host, port))
            if not ip.is_loopback and ip.version == 4:
                mdns_ips.append(host)
    if cfg.mdns_interfaces:
        mdns_ips = mdns.resolve_interfaces(list(cfg.mdns_interfaces))
    return list(dict.fromkeys(addrs)), list(dict.fromkeys(mdns_ips))


class Discovery:
    def __init__(self) -> None:
        self.dht: Any = None
        self.adv: Any = None
        self.mdns_ips: list[str] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self, node: Any, cfg: Config, home: Path | None, ports: list[int]) -> None:
        addrs, ips = listen_addresses(cfg, ports)
        node.addresses = addrs
        if cfg.mode == "internet":
            from phase_core.aio.dht import DhtService

            self.dht = DhtService(node.identity, addrs,
                                  store_path=(home / "dht.json") if home else None,
                                  keyring=None)
            node.dht = self.dht
            if cfg.bootstrap:
                n = await self.dht.bootstrap(list(cfg.bootstrap))
                log.get().info("dht.joined", contacts=n, bootstrap=list(cfg.bootstrap))
            await self.dht.publish_node_record(node.capabilities(),
                                               lifetime_s=RECORD_LIFETIME_S)
            if node.published is not None:
                for env in node.published.manifests:
                    stored = await self.dht.put_record(env)
                    log.get().info("dht.boot_manifest_published",
                                   channel=env["body"]["channel"], arch=env["body"]["arch"],
                                   stored=sum(stored.values()))
            self.dht.start(upkeep_interval())
        if cfg.mdns and ips:
            from phase_core.aio import mdns

            self.mdns_ips = ips
            try:
                self.adv = await mdns.advertise(node.node_record(), ports[0], ips)
                log.get().info("mdns.advertising", interfaces=ips)
                self._task = asyncio.ensure_future(self._readvertise(node))
            except PhaseError as e:
                log.get().warning("mdns.advertise_failed", **e.to_record())

    async def _readvertise(self, node: Any) -> None:
        while True:
            await asyncio.sleep(READVERTISE_S)
            try:
                await self.adv.update(node.node_record())
            except Exception as e:  # keep the node up; the next round retries
                log.get().warning("mdns.update_failed", error=type(e).__name__, message=str(e))

    def status(self) -> dict[str, Any]:
        st: dict[str, Any] = {"mdns_interfaces": self.mdns_ips}
        if self.dht is not None:
            st["dht"] = self.dht.status()
        return st

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self.adv is not None:
            await self.adv.close()
        if self.dht is not None:
            await self.dht.close()
