"""A node as a boot provider: the manifests in ``<home>/boot/<channel>/<arch>/``.

At start the node loads every signed boot manifest there, serves their artifacts
to any peer over the transport (``get``) and, with ``boot_http`` set, over HTTP
(the provider layout of provider.py); it names them in its signed node record
(``capabilities.boot``: channel, arch, and the HTTP URL), which mDNS carries, and
in internet mode stores the manifests in the DHT under their (channel, arch) key.
``plasmd boot-sign`` puts new manifests there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phase_core import boot, envelope, log
from phase_core.canonical import parse
from phase_core.errors import PhaseError


def boot_dir(home: Path) -> Path:
    return Path(home) / "boot"


@dataclass
class Published:
    manifests: list[dict[str, Any]] = field(default_factory=list)
    artifacts: set[str] = field(default_factory=set)
    url: str | None = None
    server: Any = None

    def entries(self) -> list[dict[str, Any]]:
        out = []
        for env in self.manifests:
            e: dict[str, Any] = {"channel": env["body"]["channel"], "arch": env["body"]["arch"]}
            if self.url:
                e["url"] = self.url
            out.append(e)
        return out

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


def load(home: Path) -> Published:
    """The well-formed, signed manifests under ``<home>/boot`` (signatures are checked
    by whoever boots from them; a malformed file is logged and skipped)."""
    pub = Published()
    for path in sorted(boot_dir(home).glob("*/*/manifest.json")):
        try:
            env = parse(path.read_bytes())
            parsed = envelope.parse(env)
            if parsed.type != boot.TYPE:
                raise PhaseError(f"{path} is a {parsed.type}, not a boot manifest")
            envelope.check_signatures(parsed)
            boot.BODY(parsed.body, "boot_manifest")
        except (OSError, PhaseError) as e:
            log.get().warning("provider.bad_manifest", path=str(path), message=str(e))
            continue
        pub.manifests.append(env)
        pub.artifacts.update(a["id"] for _, a in boot.artifacts(parsed.body))
    return pub


def start_http(pub: Published, home: Path, cas: Any, host: str, port: int) -> None:
    from plasmd.provider import serve

    pub.server = serve(cas, boot_dir(home), host, port)
    pub.url = pub.server.url
    log.get().info("provider.listening", url=pub.url,
                   manifests=[f"{e['channel']}/{e['arch']}" for e in pub.entries()])
