"""The iterative parallel Kademlia lookup as a state machine (sans-I/O).

Drive it like this::

    lk = Lookup(target, table.closest(target))
    while not lk.done:
        for c in lk.next_queries():         # at most ALPHA in flight
            send dht_find_node / dht_get to c
        ... as answers arrive:
        lk.on_response(node_id, contacts)   # the contacts it returned (candidates)
        lk.on_failure(node_id)              # timeout, refused, wrong peer, garbage

It ends when the k closest candidates that have not failed have all answered,
or when no candidate is left to ask, or after ``max_queries`` requests. A peer
that lies (unreachable ids, ids close to the target that do not exist) costs a
failed request per lie, and its lies are capped at ``k`` contacts per answer:
the lookup still converges on the honest nodes it learns from the others.

``hops`` is the length of the referral chain to the closest node that
answered (a seed answering is hop 1).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from phase_core.protocol.dht import ALPHA, Contact, K

NEW, INFLIGHT, OK, FAILED = range(4)


@dataclass
class _Cand:
    contact: Contact
    dist: int
    depth: int
    state: int = NEW


class Lookup:
    def __init__(self, target: int, seeds: Iterable[Contact], *, own_id: str | None = None,
                 k: int = K, alpha: int = ALPHA, max_candidates: int | None = None,
                 max_queries: int | None = None) -> None:
        self.target = target
        self.k = k
        self.alpha = alpha
        self.own_id = own_id
        self.max_candidates = max_candidates or 8 * k
        self.max_queries = max_queries or 12 * k
        self._cands: list[_Cand] = []  # sorted by distance
        self._keys: list[int] = []  # distances, for bisect
        self._by_id: dict[str, _Cand] = {}
        self.inflight = 0
        self.queries = 0
        self.responses = 0
        self.failures = 0
        self._exhausted = False
        for c in seeds:
            self._add(c, 1)

    # -- inputs ---------------------------------------------------------------

    def on_response(self, node_id: str, contacts: Sequence[Contact]) -> None:
        cand = self._by_id.get(node_id)
        if cand is None or cand.state != INFLIGHT:
            return  # dropped from the shortlist meanwhile, or not asked: ignore
        cand.state = OK
        self.inflight -= 1
        self.responses += 1
        for c in contacts[:self.k]:
            if c.node_id != node_id:
                self._add(c, cand.depth + 1)

    def on_failure(self, node_id: str) -> None:
        cand = self._by_id.get(node_id)
        if cand is None or cand.state != INFLIGHT:
            return
        cand.state = FAILED
        self.inflight -= 1
        self.failures += 1

    # -- outputs --------------------------------------------------------------

    def next_queries(self) -> list[Contact]:
        """Candidates to ask now (marked in flight); [] when none should be asked yet."""
        out: list[Contact] = []
        if self.done:
            return out
        seen = 0
        for cand in self._cands:
            if self.inflight >= self.alpha or self.queries >= self.max_queries:
                break
            if cand.state == FAILED:
                continue
            seen += 1
            if seen > self.k:
                break
            if cand.state == NEW:
                cand.state = INFLIGHT
                self.inflight += 1
                self.queries += 1
                out.append(cand.contact)
        if not out and self.inflight == 0:
            self._exhausted = True
        return out

    @property
    def done(self) -> bool:
        if self._exhausted:
            return True
        if self.queries >= self.max_queries and self.inflight == 0:
            return True
        seen = 0
        for cand in self._cands:
            if cand.state == FAILED:
                continue
            if cand.state != OK:
                return False
            seen += 1
            if seen >= self.k:
                return True
        return self.inflight == 0 and not any(c.state == NEW for c in self._cands)

    def closest(self, n: int | None = None) -> list[Contact]:
        """The closest candidates that answered, nearest first."""
        n = self.k if n is None else n
        return [c.contact for c in self._cands if c.state == OK][:n]

    @property
    def hops(self) -> int:
        for c in self._cands:
            if c.state == OK:
                return c.depth
        return 0

    def state_of(self, node_id: str) -> int | None:
        cand = self._by_id.get(node_id)
        return None if cand is None else cand.state

    # -- internals ------------------------------------------------------------

    def _add(self, contact: Contact, depth: int) -> None:
        if contact.node_id == self.own_id:
            return
        old = self._by_id.get(contact.node_id)
        if old is not None:
            if depth < old.depth and old.state == NEW:
                old.depth = depth
            return
        dist = contact.id ^ self.target
        if len(self._cands) >= self.max_candidates:
            last = self._cands[-1]
            if dist >= last.dist:
                return
            if last.state == INFLIGHT:  # never forget a request in flight; drop a NEW one
                for j in range(len(self._cands) - 1, -1, -1):
                    if self._cands[j].state != INFLIGHT:
                        break
                else:
                    return
                victim = self._cands[j]
            else:
                victim = last
                j = len(self._cands) - 1
            del self._cands[j]
            del self._keys[j]
            del self._by_id[victim.contact.node_id]
        cand = _Cand(contact, dist, depth)
        i = bisect.bisect_left(self._keys, dist)
        self._keys.insert(i, dist)
        self._cands.insert(i, cand)
        self._by_id[contact.node_id] = cand
