"""mDNS / DNS-SD on the LAN (docs/discovery.md). The only module that imports zeroconf (and ifaddr).

A node advertises ``<first 32 hex of its id>._phase._udp.local.`` with its
QUIC port in the SRV record and its signed node record in TXT, compactly:

    v=1            format version
    id=<64 hex>    node id (the signer)
    port=<decimal> the QUIC port (also in SRV)
    sig=<64 raw bytes>  Ed25519 signature of the node record
    r0=..r9=       zlib(canonical JSON of the record body), in chunks of <= 240 bytes
    boot=1         present when the record lists boot entries (a hint; the record decides)

A browser rebuilds the envelope ``{"v":1,"type":"node_record","body":...,
"signatures":[{"key":id,"sig":...}]}`` and reports it only if it verifies as a
node record signed by the node it names, with ``id`` equal to that node
(``dht_store.verify_value`` under ``phase/node/<id>``). Anything else is dropped
and counted. TXT stays under ``MAX_TXT_BYTES`` so the whole answer fits one
unfragmented packet.

Interfaces are always explicit: ``resolve_interfaces(names)`` turns interface
names into IPv4 addresses; without names it picks every interface that is up,
except loopback. zeroconf is never started with ``InterfaceChoice.All``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ifaddr
from zeroconf import IPVersion, ServiceStateChange
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from phase_core import log, records
from phase_core.canonical import canonical, parse
from phase_core.errors import ConfigError, PhaseError, TooLarge, Unavailable
from phase_core.protocol.dht import check_address, join_address, node_key
from phase_core.protocol.dht_store import Value, boot_entries, verify_value

SERVICE = "_phase._udp.local."
CHUNK = 240
MAX_CHUNKS = 10
MAX_TXT_BYTES = 1100
MAX_BODY_BYTES = 8192
RESOLVE_TIMEOUT_MS = 1500
Clock = Callable[[], float]


def resolve_interfaces(names: Sequence[str] | None = None) -> list[str]:
    """IPv4 addresses of the named interfaces (or of every non-loopback interface that
    is up). Raises ``ConfigError`` for an unknown name or when nothing is left, and
    ``Unavailable`` when the interfaces cannot be listed at all (netlink refused, as
    under a sandbox that allows no AF_NETLINK sockets)."""
    try:
        adapters = {a.nice_name: a for a in ifaddr.get_adapters()}
    except OSError as e:
        raise Unavailable(f"cannot list the network interfaces: {e.strerror or e}",
                          hint="the process may not open netlink sockets (a sandbox such "
                               "as systemd's RestrictAddressFamilies); allow AF_NETLINK, "
                               "or listen on an explicit address") from e
    if names:
        unknown = [n for n in names if n not in adapters]
        if unknown:
            raise ConfigError(f"no network interface named {', '.join(unknown)}",
                              hint=f"known: {', '.join(sorted(adapters))}")
        chosen = [adapters[n] for n in names]
    else:
        chosen = [a for a in adapters.values() if a.nice_name != "lo" and _is_up(a.nice_name)]
    out = [str(ip.ip) for a in chosen for ip in a.ips
           if isinstance(ip.ip, str) and not (not names and ip.ip.startswith("127."))]
    if not out:
        raise ConfigError("no IPv4 address on the chosen interfaces for mDNS",
                          hint="pass --interface=NAME of an interface that has one")
    return list(dict.fromkeys(out))


def _is_up(name: str) -> bool:
    try:
        flags = int(Path(f"/sys/class/net/{name}/flags").read_text().strip(), 16)
    except (OSError, ValueError):
        return False
    return bool(flags & 0x1)


# -- TXT encoding ----------------------------------------------------------------

def encode_txt(env: dict[str, Any], port: int) -> dict[bytes, bytes]:
    """The TXT properties that carry a signed node record (see the module docstring)."""
    body = env["body"]
    sigs = env["signatures"]
    if env.get("type") != records.TYPE or len(sigs) != 1 or sigs[0]["key"] != body["node_id"]:
        raise ConfigError("mDNS advertises a node record signed by its node only")
    packed = zlib.compress(canonical(body), 9)
    chunks = [packed[i:i + CHUNK] for i in range(0, len(packed), CHUNK)]
    if len(chunks) > MAX_CHUNKS:
        raise TooLarge("the node record is too large for mDNS TXT")
    props: dict[bytes, bytes] = {b"v": b"1", b"id": body["node_id"].encode(),
                                 b"port": str(port).encode(),
                                 b"sig": bytes.fromhex(sigs[0]["sig"])}
    for i, c in enumerate(chunks):
        props[f"r{i}".encode()] = c
    if boot_entries(body["capabilities"]):
        props[b"boot"] = b"1"
    size = sum(len(k) + len(v) + 2 for k, v in props.items())
    if size > MAX_TXT_BYTES:
        raise TooLarge(f"TXT would be {size} bytes; at most {MAX_TXT_BYTES}",
                       hint="fewer addresses or features in the node record")
    return props


def decode_txt(props: dict[bytes, bytes | None], now: int) -> Value:
    """The verified node record carried by TXT properties, or raise."""
    def get(k: bytes) -> bytes:
        v = props.get(k)
        if v is None:
            raise PhaseError(f"TXT lacks {k.decode()}", slug="bad_txt")
        return v
    if get(b"v") != b"1":
        raise PhaseError("unknown TXT version", slug="bad_txt")
    node_id = get(b"id").decode("ascii", "replace")
    sig = get(b"sig")
    if len(sig) != 64:
        raise PhaseError("TXT sig is not 64 bytes", slug="bad_txt")
    packed = b""
    for i in range(MAX_CHUNKS):
        c = props.get(f"r{i}".encode())
        if c is None:
            break
        packed += c
    d = zlib.decompressobj()
    try:
        raw = d.decompress(packed, MAX_BODY_BYTES + 1)
    except zlib.error:
        raise PhaseError("TXT record body is not zlib data", slug="bad_txt") from None
    if len(raw) > MAX_BODY_BYTES or d.unconsumed_tail:
        raise TooLarge("TXT record body is too large")
    body = parse(raw, max_bytes=MAX_BODY_BYTES)
    env = {"v": 1, "type": records.TYPE, "body": body,
           "signatures": [{"key": node_id, "sig": sig.hex()}]}
    return verify_value(env, node_key(node_id), now)  # checks signature and id binding


# -- advertising -------------------------------------------------------------------

class Advertiser:
    """Our node record on the LAN. ``update(env)`` re-announces a newer record."""

    def __init__(self, azc: AsyncZeroconf, info: AsyncServiceInfo, port: int,
                 ips: list[str]) -> None:
        self._azc = azc
        self._info = info
        self.port = port
        self.interfaces = ips

    async def update(self, env: dict[str, Any]) -> None:
        info = _service_info(env, self.port, self.interfaces)
        await self._azc.async_update_service(info)
        self._info = info

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._azc.async_unregister_service(self._info)
        await self._azc.async_close()


def _service_info(env: dict[str, Any], port: int, ips: list[str]) -> AsyncServiceInfo:
    node_id = env["body"]["node_id"]
    short = node_id[:32]
    return AsyncServiceInfo(SERVICE, f"{short}.{SERVICE}", port=port,
                            addresses=[socket.inet_aton(ip) for ip in ips],
                            properties=encode_txt(env, port), server=f"phase-{short}.local.")


async def advertise(env: dict[str, Any], port: int, interfaces: Sequence[str]) -> Advertiser:
    """Announce ``env`` (our signed node record) for QUIC ``port`` on ``interfaces``
    (IPv4 addresses from ``resolve_interfaces``; at least one)."""
    ips = list(interfaces)
    if not ips:
        raise ConfigError("mDNS needs at least one interface address")
    info = _service_info(env, port, ips)
    azc = AsyncZeroconf(interfaces=ips, ip_version=IPVersion.V4Only)
    try:
        await azc.async_register_service(info, allow_name_change=True)
    except Exception as e:
        await azc.async_close()
        raise Unavailable(f"cannot advertise on mDNS: {e}") from None
    return Advertiser(azc, info, port, ips)


# -- browsing -------------------------------------------------------------------------

@dataclass(frozen=True)
class Found:
    """A verified node record seen on the LAN, and where the announcement said it listens."""

    value: Value
    addresses: tuple[str, ...]  # from the A/SRV records (unsigned; the transport checks the id)


class Browser:
    """Report every verified ``_phase._udp`` record once per (node, seq)."""

    def __init__(self, interfaces: Sequence[str], on_found: Callable[[Found], None],
                 clock: Clock) -> None:
        self.interfaces = list(interfaces)
        self.on_found = on_found
        self.clock = clock
        self.stats: Counter[str] = Counter()
        self._seen: dict[str, int] = {}
        self._azc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        if not self.interfaces:
            raise ConfigError("mDNS needs at least one interface address")
        self._azc = AsyncZeroconf(interfaces=self.interfaces, ip_version=IPVersion.V4Only)
        self._browser = AsyncServiceBrowser(self._azc.zeroconf, SERVICE,
                                            handlers=[self._on_change])

    def _on_change(self, zeroconf: Any, service_type: str, name: str,
                   state_change: ServiceStateChange) -> None:
        if state_change in (ServiceStateChange.Added, ServiceStateChange.Updated):
            task = asyncio.ensure_future(self._resolve(service_type, name))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _resolve(self, service_type: str, name: str) -> None:
        assert self._azc is not None
        info = AsyncServiceInfo(service_type, name)
        try:
            ok = await info.async_request(self._azc.zeroconf, RESOLVE_TIMEOUT_MS)
        except Exception as e:  # hostile or odd packets must never take us down
            self.stats["resolve_failed"] += 1
            log.get().debug("mdns.resolve_failed", name=name[:80], error=repr(e)[:200])
            return
        if not ok:
            self.stats["resolve_failed"] += 1
            return
        try:
            value = decode_txt(dict(info.properties), int(self.clock()))
        except PhaseError as e:
            self.stats[f"rejected_{e.slug}"] += 1
            log.get().info("mdns.record_rejected", name=name[:80], error=e.slug,
                           message=e.message)
            return
        except Exception as e:
            self.stats["rejected_malformed"] += 1
            log.get().info("mdns.record_rejected", name=name[:80], error="malformed",
                           message=repr(e)[:200])
            return
        nid, seq = value.body["node_id"], value.body["seq"]
        if self._seen.get(nid, -1) >= seq:
            return
        self._seen[nid] = seq
        addrs: list[str] = []
        for ip in info.parsed_addresses(IPVersion.V4Only):
            with contextlib.suppress(PhaseError):
                addrs.append(check_address(join_address(ip, int(info.port or 0))))
        self.stats["found"] += 1
        self.on_found(Found(value, tuple(addrs)))

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        if self._browser is not None:
            with contextlib.suppress(Exception):
                await self._browser.async_cancel()
        if self._azc is not None:
            with contextlib.suppress(Exception):
                await self._azc.async_close()


async def browse(interfaces: Sequence[str], on_found: Callable[[Found], None],
                 clock: Clock) -> Browser:
    """Start browsing on ``interfaces`` (IPv4 addresses); close() the result to stop."""
    b = Browser(interfaces, on_found, clock)
    await b.start()
    return b
