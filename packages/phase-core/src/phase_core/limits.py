"""Resource limits shared by job manifests and receipts (the four fences)."""

from __future__ import annotations

from phase_core import schema as s

TYPE_CHECKING = False  # typing's, without importing typing
if TYPE_CHECKING:
    from typing import Any

MAX_MEMORY_BYTES = 1 << 40  # 1 TiB: a sanity bound, not a default
MAX_WALL_MS = 7 * 24 * 3600 * 1000
MAX_OUTPUT_BYTES = 1 << 40

LIMITS = s.obj({
    "memory_bytes": s.integer(65536, MAX_MEMORY_BYTES),
    "fuel": s.integer(1),
    "wall_ms": s.integer(1, MAX_WALL_MS),
    "output_bytes": s.integer(0, MAX_OUTPUT_BYTES),
})

# Safe defaults for a job that does not say: 256 MiB, 10^10 fuel, 30 s, 16 MiB.
DEFAULT_LIMITS: dict[str, int] = {
    "memory_bytes": 256 << 20,
    "fuel": 10_000_000_000,
    "wall_ms": 30_000,
    "output_bytes": 16 << 20,
}


def clamp(limits: dict[str, Any], ceilings: dict[str, int]) -> dict[str, int]:
    """Each limit lowered to the operator's ceiling where it is higher."""
    return {k: min(int(limits[k]), int(ceilings.get(k, limits[k]))) for k in DEFAULT_LIMITS}
