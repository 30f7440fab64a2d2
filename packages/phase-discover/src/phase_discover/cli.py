"""Find Phase nodes and boot manifests on the LAN (mDNS) and in the DHT.

Every record is verified before it is printed (a node record must be signed by
the node it names; a boot manifest's signatures must verify — whether you trust
its signers is phase-verify's question). Results stream as JSON lines as they
arrive, each node or manifest once, and the command always ends by its deadline.

Usage:
  phase-discover nodes [--arch=ARCH] [--runtime=NAME] [--min-memory=BYTES] [--via=VIA]
                       [--bootstrap=ADDR]... [--interface=IF]... [--timeout=S] [--limit=N]
                       [-q] [-v...]
  phase-discover boot --channel=C --arch=A [--via=VIA] [--bootstrap=ADDR]...
                      [--interface=IF]... [--provider=URL]... [--proxy=URL] [--timeout=S]
                      [--limit=N] [-q] [-v...]
  phase-discover (-h | --help)
  phase-discover --version

Options:
  --arch=ARCH         Only nodes of this architecture (x86_64, aarch64, ...); for boot,
                      the architecture to boot.
  --runtime=NAME      Only nodes that offer this runtime (e.g. wasmtime).
  --min-memory=BYTES  Only nodes with at least this much memory (suffixes K M G T, powers
                      of 1024).
  --channel=C         The boot channel (e.g. stable).
  --via=VIA           mdns, dht or both (default: both; none with a proxy).
  --bootstrap=ADDR    A DHT node to start from, host:port (repeatable; default: the
                      comma-separated PHASE_BOOTSTRAP).
  --interface=IF      Network interface for mDNS (repeatable; default: every interface
                      that is up, except loopback).
  --provider=URL      An HTTP boot provider: GET URL/<channel>/<arch>/manifest.json
                      (repeatable).
  --proxy=URL         Ask the providers through this SOCKS5 proxy only,
                      socks5h://[user:pass@]IP:PORT (e.g. tor's socks5h://127.0.0.1:9050;
                      default: $PHASE_PROXY): provider host names are resolved by the
                      proxy. mDNS and the DHT cannot go through a proxy, so they are off:
                      the options --via, --bootstrap and --interface are refused,
                      PHASE_BOOTSTRAP is ignored, and `nodes` refuses PHASE_PROXY.
  --timeout=S         Deadline in seconds: stop and exit by then [default: 5].
  --limit=N           Stop after N results.
  -q, --quiet         Print nothing on stdout; the exit status answers.
  -v, --verbose       More log lines on stderr (-vv for debug).
  --log-format=FMT    json, text or auto (text on a terminal); also PHASE_LOG_FORMAT.
  -h, --help          Show this help.
  --version           Show the version.

Output (one JSON object per line):
  {"v":1,"type":"node","node_id":...,"addresses":[...],"capabilities":{...},"seq":...,
   "expires":...,"id":...,"source":"mdns"|"dht","envelope":{signed node record}}
  {"v":1,"type":"boot","channel":...,"arch":...,"version":...,"id":...,"signers":[...],
   "expires":...,"source":...,"provider_url":...,"envelope":{signed boot manifest}}
  {"v":1,"type":"boot_provider","channel":...,"arch":...,"node_id":...,"addresses":[...],
   "url":...,"source":...}
  Records with an "envelope" field are accepted by phase-verify as they are; it passes
  a boot record's provider_url on to phase-fetch as a source (docs/pipeline.md), so
  `phase-discover boot ... | phase-verify ... | phase-fetch --out-dir=DIR` needs no
  --mirror.

Exit status:
  0   at least one result was found
  64  bad usage
  69  nothing was found before the deadline
  75, 76, 78  nothing was found, and the proxy could not be reached or timed out (75),
      broke the SOCKS5 protocol (76) or refused the login (78)
  78  bad configuration (e.g. an unknown interface, a bad PHASE_PROXY)
  130 interrupted
  141 stdout was closed
"""

from __future__ import annotations

import time
from typing import Any

from phase_core.cli.runner import entry as _entry
from phase_discover import __version__

_IMPORTED = time.monotonic()
_started: float | None = None  # set by entry(): --timeout counts from process start


def main(args: dict[str, Any]) -> int:
    global _started
    from phase_discover import run

    started, _started = _started, None
    return run.main(args, started)


def entry() -> None:
    global _started
    _started = _IMPORTED
    _entry("phase-discover", __doc__ or "", __version__, main)
