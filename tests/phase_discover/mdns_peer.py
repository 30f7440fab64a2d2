"""A process that advertises or browses mDNS, for the network-namespace tests.

    python mdns_peer.py advertise --ip=10.0.0.1 --port=4433 [--forge] [--boot=stable/x86_64]
    python mdns_peer.py browse --ip=10.0.0.2 [--ip=...] --timeout=3

``advertise`` prints {"ready": node_id} once announced and runs until stdin
closes. ``--forge`` advertises a record whose body was changed after signing.
``browse`` prints {"found": node_id, "elapsed_s": ...} per verified record and
finally {"stats": {...}}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from phase_core import envelope, records
from phase_core.aio import mdns
from phase_core.identity import Identity

CAPS = {"arch": "x86_64", "cpu_cores": 2, "memory_bytes": 1 << 30,
        "runtimes": [{"name": "wasmtime", "version": "50.0.1"}], "features": ["fuel"]}


def say(obj: object) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def advertise(a: argparse.Namespace) -> None:
    ident = Identity.generate()
    caps = dict(CAPS)
    if a.boot:
        ch, arch = a.boot.split("/")
        caps["boot"] = [{"channel": ch, "arch": arch}]
    body = records.build(node_id=ident.node_id, addresses=[f"{a.ip}:{a.port}"],
                         capabilities=caps, seq=1, now=int(time.time()))
    env = envelope.sign(records.TYPE, body, [ident])
    if a.forge:
        env["body"] = {**body, "addresses": ["10.66.66.66:4433"]}
    adv = await mdns.advertise(env, a.port, [a.ip])
    say({"ready": ident.node_id})
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    loop.add_reader(sys.stdin.fileno(), lambda: done.set() if not sys.stdin.read(1) else None)
    await done.wait()
    await adv.close()


async def browse(a: argparse.Namespace) -> None:
    t0 = time.monotonic()
    b = await mdns.browse(a.ip, lambda f: say({"found": f.value.body["node_id"],
                                               "elapsed_s": time.monotonic() - t0,
                                               "addresses": list(f.addresses)}), time.time)
    await asyncio.sleep(a.timeout)
    say({"stats": dict(b.stats)})
    await b.close()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["advertise", "browse"])
    p.add_argument("--ip", action="append", default=[])
    p.add_argument("--port", type=int, default=4433)
    p.add_argument("--forge", action="store_true")
    p.add_argument("--boot")
    p.add_argument("--timeout", type=float, default=3.0)
    a = p.parse_args()
    if a.mode == "advertise":
        a.ip = a.ip[0]
        asyncio.run(advertise(a))
    else:
        asyncio.run(browse(a))


if __name__ == "__main__":
    main()
