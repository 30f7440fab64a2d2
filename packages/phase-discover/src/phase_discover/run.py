"""phase-discover's logic: run mDNS, the DHT and HTTP providers side by side until the
deadline, print each verified result once.

The deadline is absolute: every source runs inside one ``asyncio.wait_for``;
cleanup gets at most ``CLEANUP_S``; a watchdog thread ends the process if even
that hangs. Library use: ``discover_nodes(...)`` / ``discover_boot(...)`` are
async generators of output records (plasmd uses the first to find workers).
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from phase_core import boot, exitcodes, log, proxy, records
from phase_core.canonical import parse
from phase_core.cli.jsonl import write_record
from phase_core.errors import ConfigError, PhaseError, UsageError
from phase_core.protocol.dht import KEY_ANY, arch_key, boot_key, check_address, runtime_key
from phase_core.protocol.dht_store import Value, boot_entries, verify_value
from phase_core.protocol.socks5 import ProxyError
from phase_core.proxy import Proxy

CLEANUP_S = 1.0  # at most this long to close sockets after the work window
WATCHDOG_GRACE_S = 2.0
MAX_MANIFEST_BYTES = 256 << 10
VIAS = ("mdns", "dht", "both")
_SIZE_RE = re.compile(r"([0-9]+)\s*([KMGT]?)(i?B)?", re.IGNORECASE)


@dataclass
class Options:
    command: str
    via: str = "both"
    timeout_s: float = 5.0
    limit: int | None = None
    bootstrap: list[str] = field(default_factory=list)
    interfaces: list[str] | None = None
    arch: str | None = None
    runtime: str | None = None
    min_memory: int = 0
    channel: str | None = None
    providers: list[str] = field(default_factory=list)
    proxy: Proxy | None = None  # providers only, through it; no mDNS, no DHT
    proxy_failures: list[PhaseError] = field(default_factory=list)
    clock: Callable[[], float] = time.time
    started: float = field(default_factory=time.monotonic)  # the deadline counts from here

    def budget(self) -> tuple[float, float]:
        """(seconds left to search, seconds kept for cleanup), both inside the deadline."""
        reserve = min(CLEANUP_S, 0.2 * self.timeout_s)
        left = self.timeout_s - (time.monotonic() - self.started) - reserve
        return max(0.0, left), reserve


def parse_size(text: str) -> int:
    m = _SIZE_RE.fullmatch(text.strip())
    if m is None:
        raise UsageError(f"--min-memory={text!r} is not a size like 512M or 2G")
    power: int = " KMGT".index(m.group(2).upper() or " ")
    return int(m.group(1)) * (1 << (10 * power))


def options(args: dict[str, Any]) -> Options:
    cmd = "nodes" if args.get("nodes") else "boot"
    via = args.get("--via") or "both"
    if via not in VIAS:
        raise UsageError(f"--via must be one of {', '.join(VIAS)}")
    try:
        timeout = float(args.get("--timeout") or 5)
    except ValueError:
        raise UsageError("--timeout must be a number of seconds") from None
    if not 0 < timeout <= 3600:
        raise UsageError("--timeout must be between 0 and 3600 seconds")
    limit = None
    if args.get("--limit") is not None:
        try:
            limit = int(args["--limit"])
        except ValueError:
            raise UsageError("--limit must be an integer") from None
        if limit < 1:
            raise UsageError("--limit must be at least 1")
    px = proxy.resolve(args.get("--proxy"), os.environ.get(proxy.ENV))
    if px is not None:
        check_proxy_args(cmd, args)
        via = "http"
    bootstrap = list(args.get("--bootstrap") or [])
    if px is not None and os.environ.get("PHASE_BOOTSTRAP"):
        log.get().warning("phase-discover.bootstrap_ignored",
                          message="PHASE_BOOTSTRAP is ignored: the DHT is off with a proxy")
    elif not bootstrap and os.environ.get("PHASE_BOOTSTRAP"):
        bootstrap = [a.strip() for a in os.environ["PHASE_BOOTSTRAP"].split(",") if a.strip()]
    for a in bootstrap:
        try:
            check_address(a)
        except PhaseError:
            raise UsageError(f"--bootstrap={a!r} is not host:port") from None
    opts = Options(cmd, via, timeout, limit, bootstrap, list(args.get("--interface") or []) or None,
                   args.get("--arch"), args.get("--runtime"))
    if args.get("--min-memory"):
        opts.min_memory = parse_size(args["--min-memory"])
    if cmd == "boot":
        opts.channel = args.get("--channel")
        try:
            boot.CHANNEL(opts.channel, "--channel")
            boot.ARCH(opts.arch, "--arch")
            for u in args.get("--provider") or []:
                boot.URL(u, "--provider")
        except PhaseError as e:
            raise UsageError(e.message) from None
        opts.providers = list(args.get("--provider") or [])
    opts.proxy = px
    return opts


def check_proxy_args(cmd: str, args: dict[str, Any]) -> None:
    """With a proxy only HTTP providers are asked: anything else asked for is an error."""
    if cmd == "nodes":
        raise ConfigError(f"{proxy.ENV} is set, but nodes are found only over mDNS and the "
                          "DHT, which cannot go through a SOCKS5 proxy",
                          hint=f"unset {proxy.ENV} to discover nodes")
    for opt in ("--via", "--bootstrap", "--interface"):
        if args.get(opt):
            raise UsageError(f"{opt} asks for mDNS or the DHT, which cannot go through the "
                             "proxy: with --proxy (or PHASE_PROXY) only --provider URLs are "
                             "asked", hint=f"drop {opt}, or the proxy")
    if not args.get("--provider"):
        raise UsageError("with a proxy only HTTP providers are asked, and no --provider "
                         "was given", hint="add --provider=URL")


def main(args: dict[str, Any], started: float | None = None) -> int:
    opts = options(args)
    if started is not None:
        opts.started = started
    quiet = bool(args.get("--quiet"))
    found = 0

    def emit(rec: dict[str, Any]) -> None:
        if not quiet:
            write_record(rec)

    watchdog = threading.Timer(opts.timeout_s + WATCHDOG_GRACE_S, _overdue)
    watchdog.daemon = True
    watchdog.start()
    try:
        found = asyncio.run(run(opts, emit))
    finally:
        watchdog.cancel()
    if not found and opts.proxy_failures:
        raise opts.proxy_failures[0]  # the proxy failed, not the providers: say so
    if not found:
        log.get().warning("phase-discover.none_found", error="unavailable",
                          message=f"nothing found in {opts.timeout_s:g} s",
                          hint="check --bootstrap, --interface and --via; is any node up?")
        return exitcodes.UNAVAILABLE
    return 0


def _overdue() -> None:  # pragma: no cover - only if cleanup hangs
    log.get().error("phase-discover.overdue", message="cleanup did not finish; exiting")
    os._exit(exitcodes.UNAVAILABLE)


async def run(opts: Options, emit: Callable[[dict[str, Any]], None]) -> int:
    """Print results until the deadline or the limit; return how many were printed."""
    gen = discover_nodes(opts) if opts.command == "nodes" else discover_boot(opts)
    count = 0

    async def consume() -> None:
        nonlocal count
        async for rec in gen:
            emit(rec)
            if rec["type"] in ("node", "boot"):
                count += 1
                if opts.limit is not None and count >= opts.limit:
                    return

    left, reserve = opts.budget()
    try:
        async with asyncio.timeout(left):
            await consume()
    except TimeoutError:
        pass
    finally:
        try:
            async with asyncio.timeout(reserve):
                await gen.aclose()
        except (TimeoutError, RuntimeError):
            pass
    return count


# -- sources ------------------------------------------------------------------------

class _Merge:
    """Fan-in of several async sources into one queue; closes them all on exit."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.tasks: list[asyncio.Task[None]] = []
        self.closers: list[Callable[[], Any]] = []

    def start(self, coro: Any, name: str) -> None:
        async def wrap() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except PhaseError as e:
                log.get().warning(f"phase-discover.{name}_failed", error=e.slug,
                                  message=e.message, **({"hint": e.hint} if e.hint else {}))
            except Exception as e:
                log.get().error(f"phase-discover.{name}_failed", error="internal",
                                message=repr(e)[:300])
            finally:
                self.queue.put_nowait(None)
        self.tasks.append(asyncio.ensure_future(wrap()))

    async def items(self) -> AsyncIterator[dict[str, Any]]:
        running = len(self.tasks)
        try:
            while running:
                item = await self.queue.get()
                if item is None:
                    running -= 1
                    continue
                yield item
        finally:
            for t in self.tasks:
                t.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            for close in self.closers:
                try:
                    async with asyncio.timeout(CLEANUP_S / 2):
                        await close()
                except Exception as e:
                    log.get().debug("phase-discover.cleanup_failed", error=repr(e)[:200])


def node_record(value: Value, source: str, seen_at: tuple[str, ...] = ()) -> dict[str, Any]:
    body = value.body
    rec: dict[str, Any] = {"v": 1, "type": "node", "node_id": body["node_id"],
                           "addresses": body["addresses"], "capabilities": body["capabilities"],
                           "seq": body["seq"], "expires": body["expires"], "id": value.id,
                           "source": source}
    for k in ("observed_addresses", "reachability"):
        if k in body:
            rec[k] = body[k]
    if seen_at:
        rec["mdns_addresses"] = list(seen_at)
    rec["envelope"] = value.envelope
    return rec


def matches(opts: Options, caps: dict[str, Any]) -> bool:
    if opts.arch is not None and caps.get("arch") != opts.arch:
        return False
    if opts.runtime is not None and opts.runtime not in {r["name"] for r in caps["runtimes"]}:
        return False
    return int(caps.get("memory_bytes", 0)) >= opts.min_memory


async def _dht(opts: Options) -> Any:
    from phase_core.aio.dht import DhtService
    from phase_core.identity import Identity

    svc = DhtService(Identity.generate(), [], None, opts.clock)
    n = await svc.bootstrap(opts.bootstrap)
    log.get().info("phase-discover.dht_bootstrapped", contacts=n)
    return svc


async def discover_nodes(opts: Options) -> AsyncGenerator[dict[str, Any], None]:
    """Verified ``node`` records matching the filters, each node once."""
    m = _Merge()
    seen: set[str] = set()

    def offer(value: Value, source: str, at: tuple[str, ...] = ()) -> None:
        if value.doc_type != records.TYPE:
            return
        nid = value.body["node_id"]
        if nid in seen or not matches(opts, value.body["capabilities"]):
            return
        seen.add(nid)
        m.queue.put_nowait(node_record(value, source, at))

    if opts.via in ("mdns", "both"):
        m.start(_mdns(opts, m, lambda f: offer(f.value, "mdns", f.addresses)), "mdns")
    if opts.via in ("dht", "both"):
        if opts.bootstrap:
            key = (runtime_key(opts.runtime) if opts.runtime else
                   arch_key(opts.arch) if opts.arch else KEY_ANY)

            async def dht() -> None:
                svc = await _dht(opts)
                m.closers.append(svc.close)
                async for v in svc.iter_records(key, want_self=True,
                                                on_self=lambda v: offer(v, "dht")):
                    offer(v, "dht")
            m.start(dht(), "dht")
        else:
            log.get().info("phase-discover.no_bootstrap",
                           message="no --bootstrap or PHASE_BOOTSTRAP: the DHT is skipped")
    async for rec in m.items():
        yield rec


async def _mdns(opts: Options, m: _Merge, on_found: Callable[[Any], None]) -> None:
    from phase_core.aio import mdns

    ips = mdns.resolve_interfaces(opts.interfaces)
    browser = await mdns.browse(ips, on_found, opts.clock)
    m.closers.append(browser.close)
    await asyncio.Event().wait()  # until the deadline cancels us


async def discover_boot(opts: Options) -> AsyncGenerator[dict[str, Any], None]:
    """Signed boot manifests for (channel, arch) and who provides them."""
    assert opts.channel is not None and opts.arch is not None
    key = boot_key(opts.channel, opts.arch)
    m = _Merge()
    manifests: set[str] = set()
    providers: set[str] = set()
    fetching: set[str] = set()

    def manifest(value: Value, source: str, url: str | None = None) -> None:
        if value.doc_type != boot.TYPE or value.id in manifests:
            return
        manifests.add(value.id)
        b = value.body
        rec: dict[str, Any] = {"v": 1, "type": "boot", "channel": b["channel"],
                               "arch": b["arch"], "version": b["version"], "id": value.id,
                               "signers": [s["key"] for s in value.envelope["signatures"]],
                               "expires": b["expires"], "source": source}
        if url is not None:
            rec["provider_url"] = url
        rec["envelope"] = value.envelope
        m.queue.put_nowait(rec)

    def provider(value: Value, source: str, at: tuple[str, ...] = ()) -> None:
        if value.doc_type != records.TYPE:
            return
        for entry in boot_entries(value.body["capabilities"]):
            if (entry["channel"], entry["arch"]) != (opts.channel, opts.arch):
                continue
            url = entry.get("url")
            ident = f"{value.body['node_id']}|{url}"
            if ident in providers:
                continue
            providers.add(ident)
            rec: dict[str, Any] = {"v": 1, "type": "boot_provider", "channel": opts.channel,
                                   "arch": opts.arch, "node_id": value.body["node_id"],
                                   "addresses": value.body["addresses"], "source": source}
            if at:
                rec["mdns_addresses"] = list(at)
            if url:
                rec["url"] = url
                fetch(url, source)
            m.queue.put_nowait(rec)

    def fetch(url: str, source: str) -> None:
        if url in fetching:
            return
        fetching.add(url)

        async def get() -> None:
            # no socket wait outlives the deadline (the thread would hold the exit up)
            until_deadline = max(0.05, sum(opts.budget()))
            try:
                value = await asyncio.to_thread(fetch_manifest, url, opts.channel or "",
                                                opts.arch or "", opts.clock, until_deadline,
                                                opts.proxy)
            except ProxyError as e:
                opts.proxy_failures.append(e)
                raise
            manifest(value, source, url)
        m.start(get(), "http")

    if opts.proxy is not None:
        log.get().info("phase-discover.proxy_only", proxy=opts.proxy.name,
                       message="only the --provider URLs are asked, through the proxy; "
                               "mDNS and the DHT are off")
    for url in opts.providers:
        fetch(url, "http")
    if opts.via in ("mdns", "both"):
        m.start(_mdns(opts, m, lambda f: provider(f.value, "mdns", f.addresses)), "mdns")
    if opts.via in ("dht", "both") and opts.bootstrap:
        async def dht() -> None:
            svc = await _dht(opts)
            m.closers.append(svc.close)
            async for v in svc.iter_records(key):
                manifest(v, "dht")
                provider(v, "dht")
        m.start(dht(), "dht")
    async for rec in m.items():
        yield rec


def fetch_manifest(url: str, channel: str, arch: str, clock: Callable[[], float],
                   timeout_s: float, via: Proxy | None = None) -> Value:
    """GET ``<url>/<channel>/<arch>/manifest.json`` and check its signatures and key.

    With ``via``, the request (and any redirect) goes through that SOCKS5 proxy, the
    provider's host name unresolved here."""
    from phase_core.errors import Unavailable

    full = f"{url.rstrip('/')}/{channel}/{arch}/manifest.json"
    req = urllib.request.Request(full, headers={"Accept": "application/json"})  # noqa: S310
    opener = urllib.request.urlopen if via is None else proxy.urlopener(via).open
    try:
        with opener(req, timeout=timeout_s) as resp:
            data = resp.read(MAX_MANIFEST_BYTES + 1)
    except (urllib.error.URLError, OSError) as e:
        raise Unavailable(f"cannot GET {full}: {getattr(e, 'reason', e)}") from None
    if len(data) > MAX_MANIFEST_BYTES:
        raise Unavailable(f"{full} is larger than {MAX_MANIFEST_BYTES} bytes")
    return verify_value(parse(data, max_bytes=MAX_MANIFEST_BYTES), boot_key(channel, arch),
                        int(clock()))
