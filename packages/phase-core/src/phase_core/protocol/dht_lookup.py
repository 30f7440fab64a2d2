"""The iterative Kademlia lookup over disjoint paths, as a state machine (sans-I/O).

Drive it like this::

    lk = Lookup(target, table.closest(target))
    while not lk.done:
        for c in lk.next_queries():         # at most ALPHA in flight in all
            send dht_find_node / dht_get to c, with timeout rtt.timeout(c.node_id)
        ... as answers arrive:
        lk.on_response(node_id, contacts)   # the contacts it returned (candidates)
        lk.on_failure(node_id)              # timeout, refused, wrong peer, garbage
        lk.on_bad(node_id)                  # it served a forged or unverifiable record
    lk.suspects                             # peers to down-rank (table.penalize)

**Disjoint paths** (S/Kademlia): the seeds are dealt round-robin to ``paths``
paths; a candidate is on the paths of the peers that named it, a node is asked
by one path only and then belongs to that path alone (what it names goes to that
path). Each path runs until its own ``k`` closest live candidates have answered
(or it has nobody left to ask), so a path led astray by liars or Sybils cannot
end or starve the others. ``closest()`` merges the paths.

**Referral accounting**: every candidate remembers who named it. When
``REFERRAL_STRIKES`` candidates that only one referrer named failed, and none of
that referrer's candidates answered, the referrer is a suspect: the candidates
only it named are dropped unasked (a liar's k fabricated ids cost two timeouts,
not k), and it is left out of the result.
A peer that served a forged record (``on_bad``) is treated the same way at once.

**Diversity**: within a path's k closest, at most ``subnet_limit`` candidates of one
public /24 or /64 count (as in the routing table); the path passes over the rest. So
Sybils from a few subnets, however near the target they are, cannot fill a path's
window and end it before it reaches honest nodes.

The driver may end a lookup early (``finish()``), e.g. when a GET has its
answer from enough holders. Otherwise it ends when every path is done, or after
``max_queries`` requests. ``hops`` is the length of the referral chain to the
closest node that answered (a seed answering is hop 1).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from phase_core.protocol.dht import ALPHA, PATHS, SUBNET_LIMIT, Contact, K, subnets

NEW, INFLIGHT, OK, FAILED, DROPPED = range(5)
REFERRAL_STRIKES = 2  # failed referrals (with none answering) that make a referrer a suspect


@dataclass
class _Cand:
    contact: Contact
    dist: int
    depth: int
    paths: int  # bit mask: the paths it was named on
    referrers: list[str] = field(default_factory=list)
    state: int = NEW
    path: int = -1  # the path that asked it (it belongs to that path alone)
    nets: frozenset[str] = frozenset()

    def on(self, path: int) -> bool:
        """Part of ``path``'s view: asked by it, or not asked yet and named on it."""
        return self.path == path if self.path >= 0 else bool(self.paths >> path & 1)


@dataclass
class _Referrer:
    answered: int = 0
    failed: int = 0
    named: list[_Cand] = field(default_factory=list)


class Lookup:
    def __init__(self, target: int, seeds: Iterable[Contact], *, own_id: str | None = None,
                 k: int = K, alpha: int = ALPHA, paths: int = PATHS,
                 subnet_limit: int | None = SUBNET_LIMIT,
                 max_candidates: int | None = None, max_queries: int | None = None) -> None:
        self.target = target
        self.subnet_limit = subnet_limit
        self.k = k
        self.alpha = max(1, alpha)
        self.own_id = own_id
        seeds = list(seeds)
        self.paths = max(1, min(paths, len(seeds) or 1))
        self.path_alpha = -(-self.alpha // self.paths)  # ceil: each path's share in flight
        self.max_candidates = max_candidates or 8 * k * self.paths
        self.max_queries = max_queries or 12 * k * self.paths
        self._cands: list[_Cand] = []  # every path, sorted by distance
        self._keys: list[int] = []  # distances, for bisect
        self._by_id: dict[str, _Cand] = {}
        self._refs: dict[str, _Referrer] = {}
        self._path_inflight = [0] * self.paths
        self.suspects: set[str] = set()
        self.inflight = 0
        self.queries = 0
        self.responses = 0
        self.failures = 0
        self.dropped = 0
        self._finished = False
        for i, c in enumerate(seeds):
            self._add(c, 1, i % self.paths, None)

    # -- inputs ---------------------------------------------------------------

    def on_response(self, node_id: str, contacts: Sequence[Contact]) -> None:
        cand = self._settle(node_id, OK)
        if cand is None:
            return
        self.responses += 1
        for r in cand.referrers:
            self._refs[r].answered += 1
        if node_id in self.suspects:
            return  # it answered, but what it names is not believed
        for c in contacts[:self.k]:
            if c.node_id != node_id:
                self._add(c, cand.depth + 1, cand.path, node_id)

    def on_failure(self, node_id: str) -> None:
        cand = self._settle(node_id, FAILED)
        if cand is None:
            return
        self.failures += 1
        if len(cand.referrers) != 1:
            return  # a seed, or a node several peers know (a real node that went away)
        for r in cand.referrers:
            ref = self._refs[r]
            ref.failed += 1
            if ref.answered == 0 and ref.failed >= REFERRAL_STRIKES:
                self._distrust(r)

    def on_bad(self, node_id: str) -> None:
        """``node_id`` served something no honest node serves (a forged record)."""
        self._distrust(node_id)

    def finish(self) -> None:
        """End the lookup now (the caller has what it needs)."""
        self._finished = True

    # -- outputs --------------------------------------------------------------

    def next_queries(self) -> list[Contact]:
        """Candidates to ask now (marked in flight); [] when none should be asked yet."""
        out: list[Contact] = []
        if self.done:
            return out
        seen = [0] * self.paths
        nets: list[dict[str, int]] = [{} for _ in range(self.paths)]
        for cand in self._cands:
            if self.inflight >= self.alpha or self.queries >= self.max_queries:
                break
            if cand.state in (FAILED, DROPPED):
                continue
            if cand.path >= 0:
                if self._fits(cand, nets[cand.path]):
                    seen[cand.path] += 1
                continue
            ask = -1
            for p in range(self.paths):
                if cand.paths >> p & 1 and seen[p] < self.k and self._fits(cand, nets[p]):
                    seen[p] += 1
                    if ask < 0 and self._path_inflight[p] < self.path_alpha:
                        ask = p
            if ask >= 0:
                cand.state = INFLIGHT
                cand.path = ask
                self.inflight += 1
                self._path_inflight[ask] += 1
                self.queries += 1
                out.append(cand.contact)
        return out

    def _fits(self, cand: _Cand, counts: dict[str, int]) -> bool:
        """Diversity: count ``cand`` in a path's window unless one of its subnets already
        has ``subnet_limit`` candidates there (then the path passes over it)."""
        if self.subnet_limit is None or not cand.nets:
            return True
        if any(counts.get(n, 0) >= self.subnet_limit for n in cand.nets):
            return False
        for n in cand.nets:
            counts[n] = counts.get(n, 0) + 1
        return True

    @property
    def done(self) -> bool:
        if self._finished:
            return True
        if self.queries >= self.max_queries and self.inflight == 0:
            return True
        return all(self.path_done(p) for p in range(self.paths))

    def path_done(self, path: int) -> bool:
        """Path ``path``'s k closest live candidates answered, or it has none left to ask."""
        seen = 0
        nets: dict[str, int] = {}
        for cand in self._cands:
            if cand.state in (FAILED, DROPPED) or not cand.on(path) \
                    or not self._fits(cand, nets):
                continue
            if cand.state != OK:
                return False
            seen += 1
            if seen >= self.k:
                return True
        return True

    def closest(self, n: int | None = None) -> list[Contact]:
        """The closest candidates that answered (on any path, suspects left out)."""
        n = self.k if n is None else n
        return [c.contact for c in self._cands
                if c.state == OK and c.contact.node_id not in self.suspects][:n]

    @property
    def hops(self) -> int:
        for c in self._cands:
            if c.state == OK and c.contact.node_id not in self.suspects:
                return c.depth
        return 0

    def state_of(self, node_id: str) -> int | None:
        cand = self._by_id.get(node_id)
        return None if cand is None else cand.state

    def path_of(self, node_id: str) -> int | None:
        cand = self._by_id.get(node_id)
        return None if cand is None else cand.path

    # -- internals ------------------------------------------------------------

    def _settle(self, node_id: str, state: int) -> _Cand | None:
        cand = self._by_id.get(node_id)
        if cand is None or cand.state != INFLIGHT:
            return None  # dropped from the shortlist meanwhile, or not asked: ignore
        cand.state = state
        self.inflight -= 1
        self._path_inflight[cand.path] -= 1
        return cand

    def _distrust(self, node_id: str) -> None:
        if node_id in self.suspects:
            return
        self.suspects.add(node_id)
        ref = self._refs.get(node_id)
        for cand in ref.named if ref is not None else ():
            if cand.state == NEW and cand.referrers == [node_id]:
                cand.state = DROPPED
                self.dropped += 1

    def _add(self, contact: Contact, depth: int, path: int, referrer: str | None) -> None:
        if contact.node_id == self.own_id:
            return
        old = self._by_id.get(contact.node_id)
        if old is not None:
            old.paths |= 1 << path
            if referrer is not None and referrer not in old.referrers:
                old.referrers.append(referrer)
                self._refs.setdefault(referrer, _Referrer()).named.append(old)
                if old.state == DROPPED:  # a peer in good standing names it too: ask it
                    old.state = NEW
                    self.dropped -= 1
            if depth < old.depth and old.state == NEW:
                old.depth = depth
            return
        dist = contact.id ^ self.target
        if len(self._cands) >= self.max_candidates and not self._evict(dist):
            return
        cand = _Cand(contact, dist, depth, 1 << path, nets=subnets(contact))
        if referrer is not None:
            cand.referrers.append(referrer)
            self._refs.setdefault(referrer, _Referrer()).named.append(cand)
        i = bisect.bisect_left(self._keys, dist)
        self._keys.insert(i, dist)
        self._cands.insert(i, cand)
        self._by_id[contact.node_id] = cand

    def _evict(self, dist: int) -> bool:
        """Make room for a candidate at ``dist``: forget the farthest one not in flight."""
        if dist >= self._cands[-1].dist:
            return False
        for j in range(len(self._cands) - 1, -1, -1):
            victim = self._cands[j]
            if victim.state != INFLIGHT:
                break
        else:
            return False
        del self._cands[j]
        del self._keys[j]
        del self._by_id[victim.contact.node_id]
        return True
