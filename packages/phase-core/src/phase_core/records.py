"""Node records: who a node is, where it listens and what it can run (self-signed)."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from phase_core import schema as s
from phase_core.errors import Malformed
from phase_core.protocol.dht import check_address
from phase_core.timefmt import format_time

TYPE = "node_record"

# An address is ``host:port`` or ``[IPv6]:port`` (docs/documents.md, "Node-record
# addresses"): no scheme, port 1..65535 without leading zeros, at most 64
# characters. The dialer (``protocol.dht.split_address``) reads exactly this form.
MAX_ADDRESS_CHARS = 64
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PORT = r"(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
ADDRESS_PATTERN = rf"(?:\[[0-9A-Fa-f:.]{{2,45}}\]|{_LABEL}(?:\.{_LABEL})*):{_PORT}"
_ADDRESS_RE = re.compile(ADDRESS_PATTERN)
_NUMERIC_HOST_RE = re.compile(r"[0-9.]+")


def address(v: Any, where: str) -> str:
    """A node's dialable address, checked strictly (see ``ADDRESS_PATTERN``)."""
    if not isinstance(v, str) or len(v) > MAX_ADDRESS_CHARS \
            or _ADDRESS_RE.fullmatch(v) is None:
        raise s.fail(where, f"{repr(v)[:80]} is not host:port or [IPv6]:port "
                            "(no scheme; port 1..65535)")
    host = v.rpartition(":")[0]
    try:
        if host.startswith("["):
            ipaddress.IPv6Address(host[1:-1])
        elif _NUMERIC_HOST_RE.fullmatch(host):
            ipaddress.IPv4Address(host)
        check_address(v)
    except (ValueError, Malformed):
        raise s.fail(where, f"{v!r} does not hold a valid IP address") from None
    return v


RUNTIME = s.obj({"name": s.string(32, r"[a-z0-9_.-]+"),
                 "version": s.string(64, r"[A-Za-z0-9_.+-]+")})
CAPABILITIES = s.obj({
    "arch": s.string(16, r"[a-z0-9_]+"),
    "cpu_cores": s.integer(1, 4096),
    "memory_bytes": s.integer(0),
    "runtimes": s.array(RUNTIME, 8),
    "features": s.array(s.string(64, r"[a-z0-9_.-]+"), 32, unique=True),
}, {
    "memory_available_bytes": s.integer(0),
}, open_ended=True)

BODY = s.obj({
    "node_id": s.node_id,
    "addresses": s.array(address, 16),
    "capabilities": CAPABILITIES,
    "seq": s.integer(0),
    "created": s.time_str,
    "expires": s.time_str,
}, {
    "observed_addresses": s.array(address, 16),
    "reachability": s.one_of("public", "private", "unknown"),
})


def build(*, node_id: str, addresses: list[str], capabilities: dict[str, Any], seq: int,
          now: int, lifetime_s: int = 3600) -> dict[str, Any]:
    body = {"node_id": node_id, "addresses": list(addresses), "capabilities": capabilities,
            "seq": seq, "created": format_time(now), "expires": format_time(now + lifetime_s)}
    BODY(body, "node_record")
    return body


def newer(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """True if record body ``a`` supersedes ``b`` (same node, higher sequence)."""
    return bool(a["node_id"] == b["node_id"] and a["seq"] > b["seq"])
