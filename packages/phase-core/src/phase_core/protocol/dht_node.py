"""DHT messages and the serving side of a node (sans-I/O).

Requests and answers are JSON objects (one request per stream; see
docs/discovery.md). Every list a peer sends is capped, and a message that breaks
a cap or a type is refused whole: the requester gets ``dht_error``; an answer
that breaks one makes the request fail (``ProtocolViolation``).

``DhtNode.handle(peer_id, request, now, observed)`` returns the answer plus,
when the requester offered its listening addresses and is not yet a contact,
a candidate contact the adapter should ping (dial back, expecting that node
id) before adding it with ``table.seen``: a contact is always a node id that
completed the transport handshake *at that address*.

The dial-back goes only to the address the request came from (``observed``:
the host we saw, with the listening ports the requester claims, at most
``MAX_DIALBACK_PORTS``), never to hosts it names, and at most ``DIALBACK_RATE``
per second per observed host: a requester cannot aim our pings at someone else.

``stats`` keys are bounded: error slugs a peer sends or causes are counted
under a known slug or ``other``.
"""

from __future__ import annotations

import ipaddress
import random
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from phase_core import log
from phase_core.errors import Malformed, PhaseError, ProtocolViolation, Rejected
from phase_core.protocol.dht import (
    MAX_ADDRESSES,
    SUBNET_LIMIT,
    Contact,
    K,
    RoutingTable,
    check_address,
    check_key,
    join_address,
    key_id,
    node_int,
    split_address,
)
from phase_core.protocol.dht_rtt import RttTracker
from phase_core.protocol.dht_store import Store, Value, verify_value
from phase_core.trust import Keyring

MAX_RECORDS_PER_RESPONSE = 16
MAX_PAGE_BYTES = 48 << 10  # records per dht_value, by size (the frame cap is 64 KiB)
MAX_MESSAGE_BYTES = 64 << 10
REQUESTS = ("dht_ping", "dht_find_node", "dht_get", "dht_put")
ANSWERS = ("dht_pong", "dht_nodes", "dht_value", "dht_stored", "dht_error")
COSTS = {"dht_ping": 1, "dht_find_node": 1, "dht_get": 2, "dht_put": 5}
MAX_DIALBACK_PORTS = 2
REPLICATE_PUSHERS = K  # a holder pushes a record to a newcomer if fewer known are closer
MAX_PUSH = 64  # records pushed to one newcomer
DIALBACK_RATE, DIALBACK_BURST = 1.0, 16.0  # dial-backs per observed host (per s, burst)
#: error slugs counted by name (``refused_<slug>``, ``answer_<slug>``); others are "other"
KNOWN_SLUGS = frozenset({
    "error", "malformed", "bad_input", "too_large", "rejected", "bad_signature",
    "untrusted_signer", "threshold", "expired", "not_yet_valid", "rollback", "wrong_type",
    "wrong_key", "stale", "full", "not_close", "bad_request", "rate_limited",
    "unavailable", "timeout", "protocol_violation", "internal"})


def stat_key(prefix: str, slug: object) -> str:
    """A bounded stats key: ``prefix_slug`` for a known slug, else ``prefix_other``."""
    known = isinstance(slug, str) and slug in KNOWN_SLUGS
    return f"{prefix}_{slug}" if known else f"{prefix}_other"


# -- message builders (requests) ----------------------------------------------

def _with_sender(msg: dict[str, Any], addresses: Sequence[str] | None,
                 want_self: bool) -> dict[str, Any]:
    if addresses:
        msg["addresses"] = list(addresses)[:MAX_ADDRESSES]
    if want_self:
        msg["want_self"] = True
    return msg


def ping(addresses: Sequence[str] | None = None, want_self: bool = False) -> dict[str, Any]:
    return _with_sender({"type": "dht_ping"}, addresses, want_self)


def find_node(target: int, addresses: Sequence[str] | None = None,
              want_self: bool = False) -> dict[str, Any]:
    return _with_sender({"type": "dht_find_node", "target": f"{target:064x}"},
                        addresses, want_self)


def get(key: str, after: str | None = None, addresses: Sequence[str] | None = None,
        want_self: bool = False) -> dict[str, Any]:
    msg: dict[str, Any] = {"type": "dht_get", "key": check_key(key)}
    if after is not None:
        msg["after"] = after
    return _with_sender(msg, addresses, want_self)


def put(key: str, record: dict[str, Any], addresses: Sequence[str] | None = None
        ) -> dict[str, Any]:
    return _with_sender({"type": "dht_put", "key": check_key(key), "record": record},
                        addresses, False)


# -- answer parsing (client side) ---------------------------------------------

@dataclass
class Answer:
    type: str
    nodes: list[Contact] = field(default_factory=list)
    records: list[Any] = field(default_factory=list)  # unverified envelopes: verify each
    more: bool = False
    observed: str | None = None
    self_record: Any = None
    result: str | None = None
    error: str | None = None
    message: str | None = None


def parse_answer(msg: object, expect: str) -> Answer:
    """Check an answer's shape and caps; raise ``ProtocolViolation`` if it breaks one.

    Records come back unverified (``verify_value`` each); a bad record is the
    record's problem, not a reason to drop the honest rest of the answer.
    """
    if not isinstance(msg, dict):
        raise ProtocolViolation("the DHT answer is not an object", slug="bad_answer")
    t = msg.get("type")
    if t == "dht_error":
        err, text = msg.get("error"), msg.get("message")
        return Answer("dht_error", error=str(err)[:64] if err else "error",
                      message=str(text)[:256] if text else None)
    if t != expect:
        raise ProtocolViolation(f"expected {expect}, the peer sent {str(t)[:32]}",
                                slug="bad_answer")
    ans = Answer(t)
    try:
        nodes = msg.get("nodes", [])
        if not isinstance(nodes, list) or len(nodes) > K:
            raise Malformed(f"nodes must be a list of at most {K} contacts")
        ans.nodes = [Contact.from_json(n) for n in nodes]
        recs = msg.get("records", [])
        if not isinstance(recs, list) or len(recs) > MAX_RECORDS_PER_RESPONSE:
            raise Malformed(f"records must be a list of at most {MAX_RECORDS_PER_RESPONSE}")
        ans.records = recs
        ans.more = msg.get("more") is True
        obs = msg.get("observed")
        if obs is not None:
            ans.observed = check_address(obs)
        ans.self_record = msg.get("self")
        res = msg.get("result")
        ans.result = res if isinstance(res, str) else None
    except Malformed as e:
        raise ProtocolViolation(f"malformed {t}: {e.message}", slug="bad_answer") from None
    return ans


# -- rate limits ----------------------------------------------------------------

class RateLimiter:
    """A token bucket per peer (``rate`` tokens/s, ``burst`` at most), for a bounded
    number of peers (least recently active forgotten first)."""

    def __init__(self, rate: float = 50.0, burst: float = 200.0, max_peers: int = 4096) -> None:
        self.rate = rate
        self.burst = burst
        self.max_peers = max_peers
        self._peers: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def allow(self, peer: str, now: float, cost: float = 1.0) -> bool:
        tokens, last = self._peers.pop(peer, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - last) * self.rate)
        ok = tokens >= cost
        if ok:
            tokens -= cost
        self._peers[peer] = (tokens, now)
        while len(self._peers) > self.max_peers:
            self._peers.popitem(last=False)
        return ok


# -- NAT awareness (identify) ---------------------------------------------------

class AddressObserver:
    """Learn our public address from what peers say they see (``observed`` fields).

    One vote per observer node id (the latest one counts), votes older than
    ``window_s`` are ignored. A host address (without port: our outgoing port is
    not our listening port) wins when at least ``min_observers`` distinct nodes
    report it and it has at least two thirds of the votes. Reachability:
    ``public`` if that address is a global address that is also one of our own
    interface addresses (no NAT in between), ``private`` if it is not global or
    differs from every local address (a NAT: peers cannot dial us unsolicited),
    ``unknown`` without enough agreeing observers.
    """

    def __init__(self, local_hosts: Sequence[str] = (), min_observers: int = 3,
                 window_s: float = 3600.0, max_observers: int = 64) -> None:
        self.local_hosts = {h.strip("[]") for h in local_hosts}
        self.min_observers = min_observers
        self.window_s = window_s
        self.max_observers = max_observers
        self._votes: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def observe(self, observer_id: str, observed: str, now: float) -> None:
        try:
            host = check_address(observed).rpartition(":")[0].strip("[]")
            ipaddress.ip_address(host)
        except (Malformed, ValueError):
            return
        self._votes.pop(observer_id, None)
        self._votes[observer_id] = (host, now)
        while len(self._votes) > self.max_observers:
            self._votes.popitem(last=False)

    def public_host(self, now: float) -> str | None:
        votes = Counter(h for h, t in self._votes.values() if now - t <= self.window_s)
        total = sum(votes.values())
        if not votes:
            return None
        host, n = votes.most_common(1)[0]
        if n >= self.min_observers and 3 * n >= 2 * total:
            return host
        return None

    def reachability(self, now: float) -> str:
        host = self.public_host(now)
        if host is None:
            return "unknown"
        ip = ipaddress.ip_address(host)
        if ip.is_global and host in self.local_hosts:
            return "public"
        return "private"

    def observed_addresses(self, port: int, now: float) -> list[str]:
        host = self.public_host(now)
        if host is None:
            return []
        return [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]


# -- the serving side -------------------------------------------------------------

@dataclass
class Reply:
    message: dict[str, Any]
    candidate: Contact | None = None  # ping it (expecting its node id), then table.seen()
    stored: Value | None = None


class DhtNode:
    """One node's DHT state: routing table, store, limits. Answers requests."""

    def __init__(self, node_id: str, *, keyring: Keyring | None = None,
                 store: Store | None = None, limiter: RateLimiter | None = None,
                 rng: random.Random | None = None, k: int = K,
                 subnet_limit: int | None = SUBNET_LIMIT, limit_private: bool = False,
                 rtt: RttTracker | None = None) -> None:
        node_int(node_id)
        self.node_id = node_id
        self.table = RoutingTable(node_id, k, subnet_limit=subnet_limit,
                                  limit_private=limit_private)
        self.rtt = rtt or RttTracker()
        self._pushed: OrderedDict[str, None] = OrderedDict()  # newcomers given records
        self.store = store or Store()
        self.limiter = limiter or RateLimiter()
        self.dialbacks = RateLimiter(DIALBACK_RATE, DIALBACK_BURST)
        self.keyring = keyring
        self.rng = rng or random.Random(0)  # noqa: S311 - bucket refresh targets, not secrets
        self.own_record: dict[str, Any] | None = None
        self.stats: Counter[str] = Counter()

    def learned(self, contact: Contact, now: float
                ) -> tuple[Contact | None, list[tuple[str, dict[str, Any]]]]:
        """``contact`` answered us (or answered a dial-back): ``table.seen`` it.

        Returns what ``table.seen`` returns (a contact to ping) and, if ``contact`` is
        new to the table (taken, or waiting in a full bucket's replacement cache) and
        was not given records before, the records to push to it (key, envelope): Kademlia's
        replication rule: a holder hands each record to a newcomer that is among the k
        closest to its key, so records survive the loss of their old holders between
        republishes. A holder pushes only while it is among the ``REPLICATE_PUSHERS`` (k)
        closest it knows to the key (else it holds a stray copy), at most ``MAX_PUSH``
        records per newcomer. Fewer pushers would send fewer duplicates, but after heavy
        churn a holder's table names dead nodes as closer, and the push would not happen.
        """
        is_new = contact.node_id not in self.table
        stale = self.table.seen(contact, now)
        if not is_new or contact.node_id in self._pushed \
                or not self.table.knows(contact.node_id):  # refused (subnet, strikes)
            return stale, []
        pushes: list[tuple[str, dict[str, Any]]] = []
        for key in self.store.keys():
            target = key_id(key)
            near = self.table.closest(target, self.table.k, exclude=(contact.node_id,))
            dist = contact.id ^ target
            if len(near) >= self.table.k and near[-1].id ^ target < dist:
                continue  # not among the k closest we know (in the table or waiting)
            mine = self.table.own ^ target
            if sum(1 for c in near if c.id ^ target < mine) >= REPLICATE_PUSHERS:
                continue
            for v in self.store.get(key, int(now)):
                pushes.append((key, v.envelope))
                if len(pushes) >= MAX_PUSH:
                    break
            if len(pushes) >= MAX_PUSH:
                break
        if pushes:
            self._pushed[contact.node_id] = None
            while len(self._pushed) > 4096:
                self._pushed.popitem(last=False)
            self.stats["replicated"] += len(pushes)
        return stale, pushes

    def handle(self, peer_id: str, msg: object, now: float,
               observed: str | None = None) -> Reply:
        t = msg.get("type") if isinstance(msg, dict) else None
        if not isinstance(msg, dict) or t not in REQUESTS:
            self.stats["bad_request"] += 1
            return Reply(error("bad_request", "unknown DHT request"))
        self.stats[str(t)] += 1
        if not self.limiter.allow(peer_id, now, COSTS[str(t)]):
            self.stats["rate_limited"] += 1
            return Reply(error("rate_limited", "too many DHT requests; slow down"))
        try:
            candidate = self._candidate(peer_id, msg.get("addresses"), observed, now)
            reply = self._dispatch(peer_id, str(t), msg, now)
        except PhaseError as e:
            self.stats[stat_key("refused", e.slug)] += 1
            return Reply(error(e.slug, e.message))
        except Exception as e:  # a record no check foresaw: refuse it, never crash
            self.stats["refused_internal"] += 1
            log.get().info("dht.request_failed", peer=peer_id, request=str(t),
                           error=type(e).__name__)
            return Reply(error("internal", "the request could not be processed"))
        reply.candidate = candidate
        if observed is not None:
            reply.message["observed"] = observed
        if msg.get("want_self") is True and self.own_record is not None:
            reply.message["self"] = self.own_record
        return reply

    def _candidate(self, peer_id: str, addrs: object, observed: str | None,
                   now: float) -> Contact | None:
        if addrs is None or peer_id == self.node_id or peer_id in self.table:
            return None
        if not isinstance(addrs, list) or not 1 <= len(addrs) <= MAX_ADDRESSES:
            raise Malformed(f"addresses must be a list of 1..{MAX_ADDRESSES} host:port")
        claimed = [check_address(a) for a in addrs]
        if observed is None:
            return None  # nowhere we know the request came from: no dial-back
        host = split_address(observed)[0]
        ports = list(dict.fromkeys(split_address(a)[1] for a in claimed))
        dial = tuple(join_address(host, p) for p in ports[:MAX_DIALBACK_PORTS] if p)
        if not dial:
            return None
        if not self.dialbacks.allow(host, now):
            self.stats["dialback_limited"] += 1
            return None
        return Contact(peer_id, dial)

    def _dispatch(self, peer_id: str, t: str, msg: dict[str, Any], now: float) -> Reply:
        if t == "dht_ping":
            return Reply({"type": "dht_pong"})
        if t == "dht_find_node":
            target = node_int(str(msg.get("target")))
            nodes = self.table.closest(target, exclude=(peer_id,))
            return Reply({"type": "dht_nodes", "nodes": [c.to_json() for c in nodes]})
        key = check_key(msg.get("key"))
        target = key_id(key)
        if t == "dht_get":
            after = msg.get("after")
            if after is not None and (not isinstance(after, str) or len(after) > 71):
                raise Malformed("after must be a document id")
            values = [v for v in self.store.get(key, int(now))
                      if after is None or v.id > after]
            page: list[Value] = []
            size = 0
            for v in values[:MAX_RECORDS_PER_RESPONSE]:
                if page and size + v.size > MAX_PAGE_BYTES:
                    break
                page.append(v)
                size += v.size
            nodes = self.table.closest(target, exclude=(peer_id,))
            return Reply({"type": "dht_value", "key": key,
                          "records": [v.envelope for v in page],
                          "more": len(values) > len(page),
                          "nodes": [c.to_json() for c in nodes]})
        # dht_put
        if not self.table.is_close(target):
            raise Rejected("this node is not among the k closest to that key",
                           slug="not_close", hint="store it on the nodes a lookup finds")
        value = verify_value(msg.get("record"), key, int(now), self.keyring)
        result = self.store.put(value, int(now))
        self.stats["stored"] += 1
        return Reply({"type": "dht_stored", "key": key, "result": result}, stored=value)


def error(slug: str, message: str) -> dict[str, Any]:
    return {"type": "dht_error", "error": slug, "message": message[:256]}
