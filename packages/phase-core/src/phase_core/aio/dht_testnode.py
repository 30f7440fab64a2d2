"""A DHT node for tests, until plasmd carries the DHT (not a supported tool).

    python -m phase_core.aio.dht_testnode --listen=127.0.0.1:0 [--bootstrap=ADDR]...
        [--arch=x86_64] [--runtime=NAME]... [--memory-bytes=N] [--upkeep=S]

Listens on QUIC, answers ``dht_*`` requests, bootstraps, publishes a signed
node record with the given (test) capabilities, then prints one JSON line
``{"v":1,"type":"dht_testnode","node_id":...,"address":...}`` and runs until
SIGTERM or stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from typing import Any

from phase_core.aio.dht import DhtService
from phase_core.aio.quic import listen
from phase_core.aio.stream import Stream
from phase_core.identity import Identity
from phase_core.protocol.dht import join_address, split_address


async def serve(args: argparse.Namespace) -> None:
    ident = Identity.generate()
    host, port = split_address(args.listen)
    holder: dict[str, DhtService] = {}

    async def handler(peer_id: str, stream: Stream) -> None:
        first = await stream.recv()
        if first is None or not str(first.get("type", "")).startswith("dht_"):
            stream.abort()
            return
        await holder["dht"].handle(peer_id, first, stream)

    server = await listen(host, port, ident, handler)
    addr = join_address(host, server.port)
    dht = DhtService(ident, [addr])
    holder["dht"] = dht
    await dht.bootstrap(args.bootstrap)
    caps: dict[str, Any] = {"arch": args.arch, "cpu_cores": 1,
                            "memory_bytes": args.memory_bytes,
                            "runtimes": [{"name": r, "version": "1.0"} for r in args.runtime],
                            "features": []}
    await dht.publish_node_record(caps)
    dht.start(args.upkeep)
    sys.stdout.write(json.dumps({"v": 1, "type": "dht_testnode", "node_id": ident.node_id,
                                 "address": addr}) + "\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    with contextlib.suppress(Exception):
        loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not sys.stdin.read(1) else None)
    await stop.wait()
    await dht.close()
    await server.close()


def main() -> None:
    p = argparse.ArgumentParser(prog="dht_testnode")
    p.add_argument("--listen", default="127.0.0.1:0")
    p.add_argument("--bootstrap", action="append", default=[])
    p.add_argument("--arch", default="x86_64")
    p.add_argument("--runtime", action="append", default=[])
    p.add_argument("--memory-bytes", type=int, default=1 << 30)
    p.add_argument("--upkeep", type=float, default=5.0)
    asyncio.run(serve(p.parse_args()))


if __name__ == "__main__":
    main()
