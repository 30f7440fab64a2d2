"""Boot manifests: which kernel and initramfs a (channel, arch) boots, signed by boot signers."""

from __future__ import annotations

from typing import Any

from phase_core import schema as s
from phase_core.timefmt import format_time

TYPE = "boot_manifest"
ROLE = "boot-signer"
MAX_ARTIFACT_BYTES = 4 << 30

ARTIFACT = s.obj({"id": s.content_id, "size": s.integer(1, MAX_ARTIFACT_BYTES)})
CHANNEL = s.string(32, r"[a-z0-9][a-z0-9._-]*", min_len=1)
ARCH = s.string(16, r"x86_64|aarch64|riscv64")
URL = s.string(2048, r"https?://[^\s\x00-\x1f\x7f]+")

BODY = s.obj({
    "channel": CHANNEL,
    "arch": ARCH,
    "version": s.integer(1),
    "created": s.time_str,
    "expires": s.time_str,
    "kernel": ARTIFACT,
    "initramfs": ARTIFACT,
    "cmdline": s.string(4096, r"[^\x00-\x1f\x7f]*"),
    "mirrors": s.array(URL, 32, unique=True),
}, {
    "rootfs": ARTIFACT,
    "providers": s.array(s.node_id, 32, unique=True),
})


def build(*, channel: str, arch: str, version: int, now: int, lifetime_s: int,
          kernel: dict[str, Any], initramfs: dict[str, Any], cmdline: str,
          mirrors: list[str], rootfs: dict[str, Any] | None = None,
          providers: list[str] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "channel": channel, "arch": arch, "version": version,
        "created": format_time(now), "expires": format_time(now + lifetime_s),
        "kernel": kernel, "initramfs": initramfs, "cmdline": cmdline,
        "mirrors": list(mirrors),
    }
    if rootfs is not None:
        body["rootfs"] = rootfs
    if providers:
        body["providers"] = list(providers)
    BODY(body, "boot_manifest")
    return body


def rollback_key(body: dict[str, Any]) -> str:
    """The high-water-mark key of a boot manifest: ``boot/<channel>/<arch>``."""
    return f"boot/{body['channel']}/{body['arch']}"


def artifacts(body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(name, {id, size}) for every artifact the manifest names."""
    return [(n, body[n]) for n in ("kernel", "initramfs", "rootfs") if n in body]
