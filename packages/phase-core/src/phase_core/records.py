"""Node records: who a node is, where it listens and what it can run (self-signed)."""

from __future__ import annotations

from typing import Any

from phase_core import schema as s
from phase_core.timefmt import format_time

TYPE = "node_record"

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
    "addresses": s.array(s.string(256, r"[!-~]+"), 16),
    "capabilities": CAPABILITIES,
    "seq": s.integer(0),
    "created": s.time_str,
    "expires": s.time_str,
}, {
    "observed_addresses": s.array(s.string(256, r"[!-~]+"), 16),
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
