"""An eclipse attack on one record key, simulated: how many lookups of it are captured.

    .venv/bin/python bench/discovery/eclipse.py [--nodes=10000] [--lookups=300]
        [--share=0.01] [--subnets=4] [--settings=before,paths,subnets,after]

The attacker runs ``share`` of the network's nodes (1 %: 100 of 10,000) from
``subnets`` /24 networks, with node ids ground around one record key (nearer to
it than any honest node: the k closest to the key are all its own). Its nodes
join like anyone else, then each pings every honest node so that it learns the Sybil by
dial-back (into every bucket with room near the key); asked about the
key they name only each other and return no record; asked to store it they say
"stored" and drop it; anything else they answer honestly. The record is a node
record its owner publishes once the Sybils are in place (the classic eclipse of a
key: the owner's store goes to "the k closest", which are the attacker's).

A lookup is *captured* when it ends without the record. The attack is run on one
built network (sampled bootstrap) under each defence setting:

- ``before``: one lookup path, no subnet limit (the old DHT);
- ``paths``: two disjoint lookup paths only; ``subnets``: the subnet limit only (in
  the buckets and in each lookup path's window);
- ``after``: both (the defaults).

Deterministic for a seed.
"""

from __future__ import annotations

import random
import sys
import time
from dataclasses import dataclass
from typing import Any

import simnet

from phase_core.protocol import dht_node
from phase_core.protocol.dht import K, key_id, node_key

SETTINGS = [("before", 1, None), ("paths", 2, None), ("subnets", 1, 2), ("after", 2, 2)]


@dataclass(frozen=True)
class SybilIdent:
    """A Sybil's identity: it never signs, so its id can be anything it likes."""

    node_id: str


class Attack:
    def __init__(self, sim: simnet.Sim, key: str, share: float, subnets: int,
                 rng: random.Random) -> None:
        self.key = key
        self.target = key_id(key)
        live = sum(1 for n in sim.nodes if n.alive)
        count = max(1, int(live * share))
        spread = max(1, (live // K).bit_length() + 4)  # bits the ids share with the key
        self.nodes: list[simnet.SimNode] = []
        sim.attack = self
        for i in range(count):
            nid = self.target ^ rng.getrandbits(256 - spread)
            addr = f"45.77.{i % subnets}.{1 + i // subnets % 254}:4433"  # a few /24s
            node = sim._new_node(addr, SybilIdent(f"{nid:064x}"))  # type: ignore[arg-type]
            node.sybil = True
            self.nodes.append(node)
        by_dist = sorted(self.nodes, key=lambda n: n.contact.id ^ self.target)
        self.named = [n.contact.to_json() for n in by_dist[:K]]
        for node in self.nodes:  # join: look itself up (near the key) and a few far ids
            sim.join(node, sim.random_live())
        # poison: every Sybil pings every honest node, offering its address for the
        # dial-back, so that it sits in every table that has room near the key
        honest = [n for n in sim.nodes if n.alive and not n.sybil]
        for node in self.nodes:
            for h in honest:
                sim._answer(node, h.contact, dht_node.ping(node.contact.addresses), simnet.NOW)

    def answer(self, node: simnet.SimNode, msg: dict[str, Any]) -> dict[str, Any]:
        t = msg.get("type")
        if t == "dht_get" and msg.get("key") == self.key:
            return {"type": "dht_value", "key": self.key, "records": [], "more": False,
                    "nodes": self.named}
        if t == "dht_put" and msg.get("key") == self.key:
            return {"type": "dht_stored", "key": self.key, "result": "stored"}
        if t == "dht_find_node" and (int(msg["target"], 16) ^ self.target).bit_length() < 240:
            return {"type": "dht_nodes", "nodes": self.named}
        return node.dht.handle("0" * 64, msg, simnet.NOW).message


def run(n: int, lookups: int, share: float, subnets: int, seed: int = 5,
        settings: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    out = []
    for name, paths, limit in SETTINGS:
        if settings is not None and name not in settings:
            continue
        t0 = time.monotonic()
        sim, _ = simnet.built(n, seed=seed, publishers=20, sampled=True, paths=paths,
                              subnet_limit=limit)
        rng = random.Random(seed + 1)
        owner = sim.random_live()
        victim = owner.ident.node_id
        attack = Attack(sim, node_key(victim), share, subnets, rng)
        sim.publish(1, [owner])  # published while the Sybils sit around its key
        sim.rng = random.Random(seed + 2)
        captured = 0
        msgs = 0
        for _ in range(lookups):
            r = sim.get(sim.random_live(), attack.key, victim)
            captured += not r.ok
            msgs += r.messages
        sybils_known = sum(1 for x in sim.nodes if not x.sybil and x.alive
                           for s in attack.nodes if s.ident.node_id in x.dht.table)
        out.append({"setting": name, "paths": paths, "subnet_limit": limit, "nodes": n,
                    "sybils": len(attack.nodes), "subnets": subnets, "lookups": lookups,
                    "captured": round(captured / lookups, 3),
                    "messages_mean": round(msgs / lookups, 1),
                    "sybil_table_entries": sybils_known,
                    "wall_s": round(time.monotonic() - t0, 1)})
        print(out[-1], flush=True)
    return out


def main(argv: list[str]) -> int:
    opts = dict(([*a.lstrip("-").split("=", 1), ""])[:2] for a in argv)
    settings = tuple(opts["settings"].split(",")) if opts.get("settings") else None
    run(int(opts.get("nodes", 10_000)), int(opts.get("lookups", 300)),
        float(opts.get("share", 0.01)), int(opts.get("subnets", 4)), settings=settings)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

