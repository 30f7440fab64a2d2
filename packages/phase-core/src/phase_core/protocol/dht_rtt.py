"""Adaptive request timeouts from observed round-trip times (sans-I/O).

A lookup that waits a fixed timeout on every peer that never answers (a dead
node, or an id a liar made up) spends most of its time waiting. ``RttTracker``
keeps a smoothed RTT and its variation (RFC 6298: ``srtt``, ``rttvar``) per
contact and for the node as a whole; the timeout for a request is
``srtt + 4 * rttvar`` of that contact if it answered before, else of the whole
node, clamped to ``[min_s, max_s]``. Before any sample the timeout is ``max_s``.

Bounded: at most ``max_peers`` contacts are remembered (least recently
measured forgotten first).
"""

from __future__ import annotations

from collections import OrderedDict

MIN_TIMEOUT_S = 0.25
MAX_TIMEOUT_S = 3.0


class _Est:
    __slots__ = ("rttvar", "srtt")

    def __init__(self, rtt: float) -> None:
        self.srtt = rtt
        self.rttvar = rtt / 2

    def add(self, rtt: float) -> None:
        self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
        self.srtt = 0.875 * self.srtt + 0.125 * rtt

    @property
    def rto(self) -> float:
        return self.srtt + 4 * self.rttvar


class RttTracker:
    def __init__(self, min_s: float = MIN_TIMEOUT_S, max_s: float = MAX_TIMEOUT_S,
                 max_peers: int = 4096) -> None:
        self.min_s = min_s
        self.max_s = max(min_s, max_s)
        self.max_peers = max_peers
        self._all: _Est | None = None
        self._peers: OrderedDict[str, _Est] = OrderedDict()

    def observe(self, node_id: str, rtt: float) -> None:
        """``node_id`` answered after ``rtt`` seconds."""
        if not rtt >= 0:  # NaN or negative (a clock step): ignore
            return
        if self._all is None:
            self._all = _Est(rtt)
        else:
            self._all.add(rtt)
        est = self._peers.pop(node_id, None)
        if est is None:
            est = _Est(rtt)
        else:
            est.add(rtt)
        self._peers[node_id] = est
        while len(self._peers) > self.max_peers:
            self._peers.popitem(last=False)

    def timeout(self, node_id: str | None = None) -> float:
        """How long to wait for ``node_id``'s answer."""
        est = self._peers.get(node_id) if node_id is not None else None
        if est is None:
            est = self._all
        if est is None:
            return self.max_s
        return min(self.max_s, max(self.min_s, est.rto))
