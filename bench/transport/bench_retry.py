"""What address validation (QUIC Retry) costs a handshake, on 127.0.0.1.

    .venv/bin/python bench/transport/bench_retry.py [-n 200]

Times ``Client.connect`` (QUIC + TLS + Noise, i.e. until the peer is authenticated)
against a listener with ``retry=True`` (the default) and ``retry=False``, one
connection at a time, a fresh client endpoint each time. Prints one JSON line per
setting (median, p90, in ms). Client and server share one process and event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

from phase_core.aio import quic
from phase_core.aio.stream import Stream
from phase_core.identity import Identity

HOST = "127.0.0.1"


async def nothing(peer: str, stream: Stream) -> None:
    await stream.recv()


async def measure(retry: bool, n: int) -> dict[str, object]:
    server = await quic.listen(HOST, 0, Identity.generate(), nothing, retry=retry)
    ident = Identity.generate()
    times = []
    try:
        for i in range(n + 10):
            client = quic.Client(ident)
            t0 = time.perf_counter()
            conn = await client.connect(HOST, server.port)
            dt = time.perf_counter() - t0
            await conn.close()
            if i >= 10:  # warm-up
                times.append(dt * 1000)
    finally:
        await server.close()
    times.sort()
    return {"retry": retry, "n": n, "median_ms": round(statistics.median(times), 2),
            "p90_ms": round(times[int(0.9 * (len(times) - 1))], 2)}


async def main(n: int) -> None:
    for retry in (False, True, False, True):
        print(json.dumps(await measure(retry, n)), flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=200)
    asyncio.run(main(ap.parse_args().n))
