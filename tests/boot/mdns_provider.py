"""Host side of test 3, run inside the test's network namespace: an HTTP boot provider
plus an mDNS announcement of it (a self-signed node record whose capabilities carry a
``boot`` entry with the provider's URL, as phase-discover expects).

Usage: python -m tests.boot.mdns_provider CAS MANIFESTS HOST PORT
Prints "ready <url>" once both are up; runs until killed.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    from phase_core import envelope, records
    from phase_core.aio import mdns
    from phase_core.cas import ContentStore
    from phase_core.identity import Identity
    from plasmd.provider import serve

    cas, manifests, host, port = argv[0], argv[1], argv[2], int(argv[3])
    server = serve(ContentStore(Path(cas)), Path(manifests), host, port)
    ident = Identity.generate()
    caps = {"arch": "x86_64", "cpu_cores": 1, "memory_bytes": 1 << 30, "runtimes": [],
            "features": [], "boot": [{"channel": "stable", "arch": "x86_64", "url": server.url}]}
    body = records.build(node_id=ident.node_id, addresses=[f"{host}:{port}"],
                         capabilities=caps, seq=1, now=int(time.time()))
    env = envelope.sign(records.TYPE, body, [ident])

    async def run() -> None:
        adv = await mdns.advertise(env, port, [host])
        print(f"ready {server.url}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await adv.close()

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
