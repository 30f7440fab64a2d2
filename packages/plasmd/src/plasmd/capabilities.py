"""What this host can run, measured (not claimed): arch, cores, memory, runtimes."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from typing import Any

FEATURES = ["wasi-preview1", "fuel", "epoch-timeout", "memory-limit", "deterministic",
            "job-batch"]  # several jobs per stream (phase_core.protocol.jobs_batch)


def _meminfo() -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                k, _, rest = line.partition(":")
                parts = rest.split()
                if parts and parts[0].isascii() and parts[0].isdigit():
                    out[k] = int(parts[0]) * 1024
    except OSError:
        pass
    return out


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def wasmtime_version() -> str | None:
    try:
        return metadata.version("wasmtime")
    except metadata.PackageNotFoundError:
        return None


def measure() -> dict[str, Any]:
    mem = _meminfo()
    runtimes = []
    v = wasmtime_version()
    if v is not None:
        runtimes.append({"name": "wasmtime", "version": v})
    arch = platform.machine().lower().replace("amd64", "x86_64").replace("arm64", "aarch64")
    return {"arch": arch, "cpu_cores": cpu_cores(),
            "memory_bytes": mem.get("MemTotal", 0),
            "memory_available_bytes": mem.get("MemAvailable", 0),
            "runtimes": runtimes, "features": list(FEATURES)}


def unmet(requirements: dict[str, Any], caps: dict[str, Any]) -> str | None:
    """The reject reason if ``caps`` cannot satisfy ``requirements``, else None."""
    arch = requirements.get("arch")
    if arch not in (None, "any", caps["arch"]):
        return "arch_mismatch"
    runtime = requirements.get("runtime")
    if runtime is not None and runtime not in {r["name"] for r in caps["runtimes"]}:
        return "runtime_not_supported"
    if requirements.get("cpu_cores", 1) > caps["cpu_cores"]:
        return "insufficient_resources"
    if requirements.get("memory_bytes", 0) > caps["memory_bytes"]:
        return "insufficient_resources"
    missing = set(requirements.get("features", [])) - set(caps["features"])
    if missing:
        return "feature_not_supported"
    return None
