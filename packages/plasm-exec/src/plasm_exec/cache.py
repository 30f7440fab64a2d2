"""The compiled-module cache under PHASE_HOME (``<home>/cache/modules``).

An entry's name is SHA-256 of (module content id, engine fingerprint), where the
fingerprint names the engine settings, the wasmtime version and the host
architecture. Its bytes are a 40-byte header (``PLASM1\\0\\0`` + SHA-256 of the
artifact) followed by the artifact. A compiled artifact is native code that
wasmtime trusts, so an entry is read whole, its hash checked, and only then
handed to wasmtime; a corrupt, truncated or foreign entry is deleted and the
module is compiled again. The cache is bounded: after each insert the least
recently used entries (by mtime, bumped on every hit) are evicted until the
total is under ``max_bytes``.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from phase_core import log
from phase_core.digest import digest

MAGIC = b"PLASM1\0\0"
HEADER = len(MAGIC) + 32
DEFAULT_MAX_BYTES = 512 << 20
SUFFIX = ".cwasm"


def cache_dir(home: Path) -> Path:
    return Path(home) / "cache" / "modules"


class ModuleCache:
    def __init__(self, root: Path, *, fingerprint: str,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.root = Path(root)
        self.fingerprint = fingerprint
        self.max_bytes = max_bytes

    def path_for(self, module_id: str) -> Path:
        key = digest(f"{module_id}\n{self.fingerprint}".encode()).hex()
        return self.root / f"{key}{SUFFIX}"

    def load(self, module_id: str) -> bytes | None:
        path = self.path_for(module_id)
        try:
            data = path.read_bytes()
        except OSError:
            return None
        if len(data) < HEADER or data[:8] != MAGIC or \
                digest(memoryview(data)[HEADER:]) != data[8:HEADER]:
            log.get().warning("plasm.cache.corrupt", path=str(path), module=module_id)
            self.discard(module_id)
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # last use, for LRU eviction
        return data[HEADER:]

    def discard(self, module_id: str) -> None:
        with contextlib.suppress(OSError):
            self.path_for(module_id).unlink()

    def save(self, module_id: str, artifact: bytes) -> None:
        if len(artifact) + HEADER > self.max_bytes:
            return
        try:
            from phase_core.fsutil import write_atomic
            self.root.mkdir(parents=True, exist_ok=True)
            blob = MAGIC + digest(artifact) + artifact
            write_atomic(self.path_for(module_id), blob, mode=0o600)
            self.evict()
        except Exception as e:  # a cache that cannot be written is only slower
            log.get().warning("plasm.cache.write_failed", error=str(e))

    def entries(self) -> list[tuple[float, int, Path]]:
        out = []
        try:
            names = list(self.root.iterdir())
        except OSError:
            return []
        for p in names:
            if p.suffix != SUFFIX:
                continue
            with contextlib.suppress(OSError):
                st = p.stat()
                out.append((st.st_mtime, st.st_size, p))
        return out

    def evict(self) -> list[Path]:
        """Delete least recently used entries until the cache fits ``max_bytes``."""
        entries = sorted(self.entries())
        total = sum(e[1] for e in entries)
        removed = []
        for _, size, p in entries:
            if total <= self.max_bytes:
                break
            with contextlib.suppress(OSError):
                p.unlink()
                total -= size
                removed.append(p)
        return removed
