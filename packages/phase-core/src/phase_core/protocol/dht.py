"""Kademlia, sans-I/O: ids, record keys, contacts and the routing table (docs/discovery.md).

Ids are 256-bit integers. A node's id is its node id (the raw Ed25519 public
key, read big-endian); a record key's id is SHA-256 of the key string (e.g.
``phase/cap/arch/x86_64``). Distance is XOR. The routing table keeps up to
``K`` contacts per bucket, least recently seen first, and a small replacement
cache per bucket.

A *contact* is a node id that completed the transport handshake (the adapter
dialled the address expecting that id, or the peer authenticated to us): the
table is fed only from answered requests, never from lists a peer sent us.
Those lists are *candidates*, which a lookup queries before it trusts them.

Pure: no asyncio, no sockets, no clock (``now`` is passed in), no files
(``to_json``/``from_json`` for persistence), randomness from an injected
``random.Random``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import random
import re
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from phase_core.canonical import is_hex
from phase_core.errors import Malformed

ID_BITS = 256
K = 20  # bucket size and replication factor
ALPHA = 3  # parallel requests per lookup (all paths together)
PATHS = 2  # disjoint lookup paths (S/Kademlia)
REPLACEMENTS = 8  # replacement-cache entries per bucket
MAX_ADDRESSES = 4  # addresses per contact in a message
MAX_ADDRESS_CHARS = 64
MAX_KEY_CHARS = 128
BUCKET_REFRESH_S = 3600  # refresh a bucket that saw no lookup for this long
MAX_FAILURES = 2  # consecutive failed requests before a contact is dropped
MAX_STRIKES = 2  # penalties (served forgeries, named phantoms) before a contact is dropped
SUBNET_LIMIT = 2  # contacts per bucket from one IPv4 /24 or IPv6 /64 (public addresses)

# record keys
KEY_ANY = "phase/cap/any"
_KEY_RE = re.compile(
    r"phase/(node/[0-9a-f]{64}|cap/any|cap/arch/[a-z0-9_]{1,16}"
    r"|cap/runtime/[a-z0-9_.-]{1,32}|boot/[a-z0-9][a-z0-9._-]{0,31}/(x86_64|aarch64|riscv64))")
_ADDR_RE = re.compile(r"(\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9.-]{1,253}):[0-9]{1,5}")


def node_key(node_id: str) -> str:
    return f"phase/node/{node_id}"


def arch_key(arch: str) -> str:
    return f"phase/cap/arch/{arch}"


def runtime_key(name: str) -> str:
    return f"phase/cap/runtime/{name}"


def boot_key(channel: str, arch: str) -> str:
    return f"phase/boot/{channel}/{arch}"


def check_key(value: object) -> str:
    """A record key string, or raise ``Malformed``."""
    if not isinstance(value, str) or len(value) > MAX_KEY_CHARS or not _KEY_RE.fullmatch(value):
        raise Malformed(f"record key {repr(value)[:80]} is not a Phase DHT key",
                        hint="keys look like phase/cap/arch/x86_64 or phase/boot/stable/x86_64")
    return value


def key_id(key: str) -> int:
    """The 256-bit DHT id of a record key string."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest(), "big")


def node_int(node_id: str) -> int:
    """The 256-bit DHT id of a node id (64 lowercase hex)."""
    if not is_hex(node_id, 64):
        raise Malformed(f"node id {repr(node_id)[:80]} is not 64 lowercase hex characters")
    return int(node_id, 16)


def id_hex(i: int) -> str:
    return f"{i:064x}"


def distance(a: int, b: int) -> int:
    return a ^ b


_CHECKED: dict[str, None] = {}  # addresses already found valid (bounded; a speed-up only)


def check_address(value: object) -> str:
    """``host:port`` or ``[v6]:port`` (port 0..65535; see ``dialable``), or raise ``Malformed``."""
    if type(value) is str and value in _CHECKED:
        return value
    if not isinstance(value, str) or len(value) > MAX_ADDRESS_CHARS \
            or _ADDR_RE.fullmatch(value) is None:
        raise Malformed(f"address {repr(value)[:80]} is not host:port")
    host, _, port = value.rpartition(":")
    if not 0 <= int(port) < 65536:
        raise Malformed(f"address {value!r} has a port out of range")
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise Malformed(f"address {value!r} has a bad IPv6 literal") from None
    if len(_CHECKED) >= 65536:
        _CHECKED.clear()
    _CHECKED[value] = None
    return value


def split_address(addr: str) -> tuple[str, int]:
    host, _, port = check_address(addr).rpartition(":")
    return host.strip("[]"), int(port)


def join_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def dialable(addr: str) -> bool:
    """False for addresses nobody can dial (0.0.0.0, ::, port 0)."""
    try:
        host, port = split_address(addr)
    except Malformed:
        return False
    if port == 0:
        return False
    try:
        return not ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return True  # a host name


@dataclass(frozen=True)
class Contact:
    """A node we can (or were told we can) reach: its id and its addresses."""

    node_id: str
    addresses: tuple[str, ...]
    id: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "id", int(self.node_id, 16))

    def to_json(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "addresses": list(self.addresses)}

    @classmethod
    def from_json(cls, obj: object) -> Contact:
        """Parse a contact from a message; raise ``Malformed`` on anything odd."""
        if not isinstance(obj, dict) or len(obj) != 2 or "node_id" not in obj \
                or "addresses" not in obj:
            raise Malformed("a contact is an object with exactly node_id and addresses")
        nid = obj["node_id"]
        if not is_hex(nid, 64):
            raise Malformed(f"contact node id {repr(nid)[:80]} is not 64 lowercase hex")
        addrs = obj["addresses"]
        if not isinstance(addrs, list) or not 1 <= len(addrs) <= MAX_ADDRESSES:
            raise Malformed(f"a contact has 1..{MAX_ADDRESSES} addresses")
        return cls(nid, tuple(check_address(a) for a in addrs))


def subnets(contact: Contact, limit_private: bool = False) -> frozenset[str]:
    """The subnets a contact's addresses are in, for bucket diversity: ``v4:a.b.c`` (/24),
    ``v6:<first 64 bits>`` (/64), ``name:<host>`` for a host name. Loopback, private and
    link-local addresses count only with ``limit_private`` (a LAN or a test on one host)."""
    out = set()
    for addr in contact.addresses:
        host = addr.rpartition(":")[0].strip("[]")
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            out.add(f"name:{host.lower()}")
            continue
        if not limit_private and not ip.is_global:
            continue
        if ip.version == 4:
            out.add("v4:" + host.rsplit(".", 1)[0])
        else:
            out.add(f"v6:{int(ip) >> 64:016x}")
    return frozenset(out)


@dataclass(slots=True)
class _Entry:
    contact: Contact
    last_seen: float
    failures: int = 0
    strikes: int = 0
    nets: frozenset[str] = frozenset()


@dataclass
class Bucket:
    entries: list[_Entry] = field(default_factory=list)  # least recently seen first
    replacements: list[_Entry] = field(default_factory=list)  # most recent last
    touched: float = 0.0  # last lookup into this bucket's range

    def find(self, node_id: str) -> _Entry | None:
        for e in self.entries:
            if e.contact.node_id == node_id:
                return e
        return None


class RoutingTable:
    """The k-buckets of one node. Bucket ``i`` holds ids at distance [2^i, 2^(i+1)).

    Buckets are created on first use, so an empty table costs nothing.

    Diversity: a bucket holds at most ``subnet_limit`` contacts of one /24 (IPv4) or
    /64 (IPv6), counting public addresses only unless ``limit_private`` (None: no
    limit); a newcomer over the limit is refused (``refused_subnet`` counts them).
    Down-ranking: ``penalize`` gives a contact a strike; a contact with strikes is
    listed after clean ones by ``closest``, is the first evicted for a newcomer, and
    is dropped at ``MAX_STRIKES``.
    """

    def __init__(self, own_id: str, k: int = K, *, subnet_limit: int | None = SUBNET_LIMIT,
                 limit_private: bool = False) -> None:
        self.own_id = own_id
        self.own = node_int(own_id)
        self.k = k
        self.subnet_limit = subnet_limit
        self.limit_private = limit_private
        self.buckets: dict[int, Bucket] = {}
        self.refused_subnet = 0
        self.penalized: OrderedDict[str, int] = OrderedDict()  # node id -> strikes (bounded)

    def _index(self, i: int) -> int:
        d = self.own ^ i
        if d == 0:
            raise ValueError("a node is not in its own routing table")
        return d.bit_length() - 1

    def _bucket(self, i: int) -> Bucket:
        idx = self._index(i)
        b = self.buckets.get(idx)
        if b is None:
            b = self.buckets[idx] = Bucket()
        return b

    def __len__(self) -> int:
        return sum(len(b.entries) for b in self.buckets.values())

    def __contains__(self, node_id: object) -> bool:
        return isinstance(node_id, str) and self.get(node_id) is not None

    def get(self, node_id: str) -> Contact | None:
        if node_id == self.own_id:
            return None
        b = self.buckets.get(self._index(int(node_id, 16)))
        e = b.find(node_id) if b is not None else None
        return e.contact if e is not None else None

    def knows(self, node_id: str) -> bool:
        """In the table, or waiting in a full bucket's replacement cache."""
        if node_id == self.own_id:
            return False
        b = self.buckets.get(self._index(int(node_id, 16)))
        return b is not None and (b.find(node_id) is not None or any(
            r.contact.node_id == node_id for r in b.replacements))

    def contacts(self) -> list[Contact]:
        return [e.contact for _, b in sorted(self.buckets.items()) for e in b.entries]

    def seen(self, contact: Contact, now: float) -> Contact | None:
        """``contact`` answered us (or authenticated to us): insert or refresh it.

        Returns the bucket's least recently seen contact when the bucket is
        full and the newcomer went to the replacement cache: the caller should
        ping it and report ``failed()`` if it does not answer. Otherwise None.
        A contact dropped for its strikes, or one over its bucket's subnet limit,
        is not taken.
        """
        if contact.node_id == self.own_id:
            return None
        strikes = self.penalized.get(contact.node_id, 0)
        if strikes >= MAX_STRIKES:
            return None
        b = self._bucket(contact.id)
        e = b.find(contact.node_id)
        if e is not None:
            b.entries.remove(e)
            e.last_seen, e.failures = now, 0
            if e.contact.addresses != contact.addresses:
                nets = subnets(contact, self.limit_private)
                if self._crowded(b, nets, skip=e):
                    b.entries.insert(0, e)  # keep the old addresses; the new ones are over
                    return None
                e.contact, e.nets = contact, nets
            b.entries.insert(self._rank(b, e), e)
            return None
        nets = subnets(contact, self.limit_private)
        if self._crowded(b, nets):
            self.refused_subnet += 1
            return None
        new = _Entry(contact, now, strikes=strikes, nets=nets)
        if len(b.entries) < self.k:
            b.entries.insert(self._rank(b, new), new)
            return None
        if b.entries[0].strikes:  # a penalized contact makes room at once
            del b.entries[0]
            b.entries.insert(self._rank(b, new), new)
            return None
        b.replacements = [r for r in b.replacements if r.contact.node_id != contact.node_id]
        b.replacements.append(new)
        del b.replacements[:-REPLACEMENTS]
        return b.entries[0].contact

    def fill(self, contacts: Sequence[Contact], nets: Sequence[frozenset[str]],
             now: float) -> None:
        """Put ``contacts`` (with their ``subnets``) into a table that has none of them yet,
        without pings or replacement caches: a bucket takes what fits under its size and
        subnet limits. For building simulated networks quickly."""
        counts: dict[int, dict[str, int]] = {}
        for c, n in zip(contacts, nets, strict=True):
            if c.node_id == self.own_id:
                continue
            i = self._index(c.id)
            b = self._bucket(c.id)
            if len(b.entries) >= self.k:
                continue
            seen = counts.get(i)
            if seen is None:
                seen = counts[i] = {}
                for e in b.entries:
                    for net in e.nets:
                        seen[net] = seen.get(net, 0) + 1
            if self.subnet_limit is not None and any(
                    seen.get(net, 0) >= self.subnet_limit for net in n):
                continue
            for net in n:
                seen[net] = seen.get(net, 0) + 1
            b.entries.append(_Entry(c, now, nets=n))

    @staticmethod
    def _rank(b: Bucket, e: _Entry) -> int:
        """Where ``e`` goes: at the tail (most recently seen), or, with strikes, in front of
        every clean contact (the first to be evicted)."""
        if not e.strikes:
            return len(b.entries)
        i = 0
        while i < len(b.entries) and b.entries[i].strikes:
            i += 1
        return i

    def _crowded(self, b: Bucket, nets: frozenset[str], skip: _Entry | None = None) -> bool:
        if self.subnet_limit is None or not nets:
            return False
        for net in nets:
            n = sum(1 for e in b.entries if e is not skip and net in e.nets)
            if n >= self.subnet_limit:
                return True
        return False

    def penalize(self, node_id: str) -> None:
        """``node_id`` served a forged record or named phantom contacts: one strike. It is
        ranked after clean contacts, evicted first, and dropped (and not taken again while
        remembered) at ``MAX_STRIKES``."""
        if node_id == self.own_id:
            return
        strikes = self.penalized.pop(node_id, 0) + 1
        self.penalized[node_id] = strikes
        while len(self.penalized) > 4096:
            self.penalized.popitem(last=False)
        b = self.buckets.get(self._index(int(node_id, 16)))
        e = b.find(node_id) if b is not None else None
        if b is None or e is None:
            return
        b.entries.remove(e)
        e.strikes = strikes
        if strikes >= MAX_STRIKES:
            if b.replacements:
                b.entries.append(b.replacements.pop())
            return
        b.entries.insert(self._rank(b, e), e)

    def strikes(self, node_id: str) -> int:
        return self.penalized.get(node_id, 0)

    def failed(self, node_id: str) -> None:
        """A request to ``node_id`` failed: drop it after ``MAX_FAILURES``, or at once if a
        replacement is waiting."""
        if node_id == self.own_id:
            return
        b = self.buckets.get(self._index(int(node_id, 16)))
        if b is None:
            return
        e = b.find(node_id)
        if e is None:
            b.replacements = [r for r in b.replacements if r.contact.node_id != node_id]
            return
        e.failures += 1
        if e.failures >= MAX_FAILURES or b.replacements:
            b.entries.remove(e)
            if b.replacements:
                b.entries.append(b.replacements.pop())

    def closest(self, target: int, n: int | None = None,
                exclude: Iterable[str] = ()) -> list[Contact]:
        """The ``n`` (default k) known contacts closest to ``target``."""
        n = self.k if n is None else n
        skip = set(exclude)
        i = (self.own ^ target).bit_length() - 1  # -1 when target is our own id
        # Bucket i holds the closest ids (distance < 2^i); the buckets below i come next
        # (all at distance [2^i, 2^(i+1)), one group); then each bucket above i in turn.
        idx = sorted(self.buckets)
        below = [j for j in idx if j < i]
        groups = ([[i]] if i in self.buckets else []) + ([below] if below else []) \
            + [[j] for j in idx if j > i]
        found: list[Contact] = []
        suspects: list[Contact] = []  # penalized contacts: only when nobody else is known
        for group in groups:
            part = [e for j in group for e in self.buckets[j].entries
                    if e.contact.node_id not in skip]
            part.sort(key=lambda e: e.contact.id ^ target)
            found.extend(e.contact for e in part if not e.strikes)
            suspects.extend(e.contact for e in part if e.strikes)
            if len(found) >= n:
                break
        return (found + suspects)[:n]

    def is_close(self, target: int, k: int | None = None) -> bool:
        """True if this node is among the k nodes closest to ``target`` that it knows of."""
        k = self.k if k is None else k
        near = self.closest(target, k)
        return len(near) < k or near[-1].id ^ target > self.own ^ target

    def touch(self, target: int, now: float) -> None:
        """A lookup for ``target`` ran: its bucket needs no refresh for a while."""
        if target != self.own:
            self._bucket(target).touched = now

    def refresh_targets(self, now: float, rng: random.Random,
                        interval: float = BUCKET_REFRESH_S) -> list[int]:
        """Random ids in every non-empty bucket not looked up in ``interval`` seconds.

        The caller looks each one up (and the buckets below the lowest
        non-empty one are covered by a lookup of the node's own id).
        """
        out = []
        for i, b in sorted(self.buckets.items()):
            if b.entries and now - b.touched >= interval:
                out.append(self.own ^ ((1 << i) | rng.getrandbits(i)))
                b.touched = now
        return out

    def stale(self, now: float, older_than: float) -> list[Contact]:
        """Contacts not heard from in ``older_than`` seconds (to ping)."""
        return [e.contact for b in self.buckets.values() for e in b.entries
                if now - e.last_seen >= older_than]

    # -- persistence ----------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {"v": 1, "type": "dht_routing_table", "node_id": self.own_id,
                "contacts": [c.to_json() for c in self.contacts()]}

    def load_json(self, obj: object, now: float, max_contacts: int = ID_BITS * K) -> int:
        """Re-insert contacts saved by ``to_json`` (treated as seen at ``now``; the first
        failed request drops them as usual). Returns how many were loaded. A file for
        another node id, or a malformed one, raises ``Malformed``."""
        if not isinstance(obj, dict) or obj.get("type") != "dht_routing_table":
            raise Malformed("not a saved DHT routing table")
        if obj.get("node_id") != self.own_id:
            raise Malformed("the saved routing table belongs to another node id")
        items = obj.get("contacts")
        if not isinstance(items, list):
            raise Malformed("saved routing table has no contact list")
        n = 0
        for item in items[:max_contacts]:
            try:
                c = Contact.from_json(item)
            except Malformed:
                continue
            if c.node_id != self.own_id:
                self.seen(c, now)
                n += 1
        return n


def sort_by_distance(contacts: Sequence[Contact], target: int) -> list[Contact]:
    return sorted(contacts, key=lambda c: c.id ^ target)
