"""Signed DHT records: verification on receipt, the bounded store, expiry (sans-I/O).

A DHT value is a signed envelope of one of two types:

- ``node_record``: self-signed by the node it describes (checked through
  ``phase_core.documents.verify``). It may be stored only under the keys it
  implies: ``phase/node/<its id>``, ``phase/cap/any``, ``phase/cap/arch/<arch>``,
  ``phase/cap/runtime/<name>`` for each runtime, and ``phase/boot/<c>/<a>`` for
  each entry of ``capabilities.boot`` (a boot provider). Per key, one record per
  node id; a higher ``seq`` replaces a lower one.
- ``boot_manifest``: every signature must verify, the body must be a valid boot
  manifest inside its validity window, and the key must be
  ``phase/boot/<channel>/<arch>`` of the body. Whether its signers are trusted is
  the consumer's decision (phase-verify with a keyring); a node configured with a
  keyring also refuses untrusted ones. Per key, one manifest per signer set; a
  higher ``version`` replaces a lower one.

Nothing that fails a check is stored or reported. Expired records are dropped.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from phase_core import boot, envelope, records
from phase_core import schema as s
from phase_core.canonical import canonical
from phase_core.documents import Policy, verify
from phase_core.errors import Expired, Malformed, NotYetValid, PhaseError, Rejected, TooLarge
from phase_core.protocol.dht import (
    KEY_ANY,
    arch_key,
    boot_key,
    check_key,
    key_id,
    node_key,
    runtime_key,
)
from phase_core.timefmt import parse_time
from phase_core.trust import Keyring

MAX_RECORD_BYTES = 8192  # canonical bytes of one envelope
MAX_RECORDS_PER_KEY = 64
MAX_STORE_RECORDS = 20_000
MAX_STORE_BYTES = 32 << 20
MAX_KEYS_PER_RECORD = 16
MAX_CLOCK_SKEW_S = 300
REPUBLISH_S = 1800  # an owner republishes its records this often
REPLICATE_S = 3600  # a holder re-stores what it holds this often (not yet used by the adapter)
#: why a record from an honest holder may still be refused (clocks, the client's keyring)
HONEST_REFUSALS = frozenset({"expired", "not_yet_valid", "untrusted_signer", "threshold"})
BOOT_ENTRY = s.obj({"channel": boot.CHANNEL, "arch": boot.ARCH}, {"url": boot.URL})
BOOT_ENTRIES = s.array(BOOT_ENTRY, 8)


@dataclass(frozen=True)
class Value:
    """A verified record: what is stored and reported."""

    key: str
    envelope: dict[str, Any]
    doc_type: str
    id: str  # document id (sha256 of the signing message)
    slot: str  # one record per slot per key: the node id, or the boot signer set
    order: int  # seq or version: higher replaces lower
    expires: int
    size: int

    @property
    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = self.envelope["body"]
        return body


def record_keys(body: dict[str, Any], doc_type: str) -> list[str]:
    """Every key a verified record may be stored under."""
    if doc_type == boot.TYPE:
        return [boot_key(body["channel"], body["arch"])]
    caps = body["capabilities"]
    out = [node_key(body["node_id"]), KEY_ANY, arch_key(caps["arch"])]
    out += [runtime_key(r["name"]) for r in caps["runtimes"]]
    for entry in boot_entries(caps):
        out.append(boot_key(entry["channel"], entry["arch"]))
    keys = []
    for k in out:
        try:
            keys.append(check_key(k))
        except Malformed:
            continue  # a runtime name the key syntax cannot carry is simply not indexed
    return list(dict.fromkeys(keys))[:MAX_KEYS_PER_RECORD]


def boot_entries(caps: dict[str, Any]) -> list[dict[str, Any]]:
    """The (channel, arch[, url]) entries a node serves boot artifacts for; [] if none
    or malformed."""
    raw = caps.get("boot")
    if raw is None:
        return []
    try:
        entries: list[dict[str, Any]] = BOOT_ENTRIES(raw, "capabilities.boot")
        return entries
    except PhaseError:
        return []


def verify_value(obj: Any, key: str, now: int, keyring: Keyring | None = None) -> Value:
    """Verify a record received for ``key``; return it or raise (``Rejected``/``Malformed``).

    Only ``PhaseError``s leave this function: a record that trips anything else in
    the checks (a shape no schema foresaw) is ``Malformed``, never a crash."""
    check_key(key)
    try:
        return _verify_value(obj, key, now, keyring)
    except PhaseError:
        raise
    except Exception as e:
        raise Malformed(f"record could not be checked ({type(e).__name__})") from None


def _verify_value(obj: Any, key: str, now: int, keyring: Keyring | None) -> Value:
    try:
        size = len(canonical(obj))
    except PhaseError:
        raise Malformed("record is not canonical JSON") from None
    if size > MAX_RECORD_BYTES:
        raise TooLarge(f"record is {size} bytes; at most {MAX_RECORD_BYTES} are stored")
    env = envelope.parse(obj)
    if env.type == records.TYPE:
        v = verify(obj, Policy(Keyring(), now, expected_type=records.TYPE,
                               max_skew_s=MAX_CLOCK_SKEW_S))
        body = v.body
        slot, order = body["node_id"], body["seq"]
    elif env.type == boot.TYPE:
        if keyring is not None and keyring.keys:
            v = verify(obj, Policy(keyring, now, expected_type=boot.TYPE,
                                   max_skew_s=MAX_CLOCK_SKEW_S))
            body = v.body
        else:
            envelope.check_signatures(env)
            body = env.body
            boot.BODY(body, "boot_manifest")
            _check_window(body, now)
        slot = ",".join(sorted(envelope.signer_keys(env)))
        order = body["version"]
    else:
        raise Rejected(f"a {env.type} is not a DHT record", slug="wrong_type")
    if key not in record_keys(body, env.type):
        raise Rejected(f"this {env.type} does not belong under {key}", slug="wrong_key",
                       hint="a record is stored only under the keys its body implies")
    expires = parse_time(body["expires"], "expires")
    if not isinstance(slot, str) or type(order) is not int:
        raise Malformed(f"a {env.type} with a malformed node id, seq or version")
    return Value(key, env.to_json(), env.type, env.id, slot, order, expires, size)


def _check_window(body: dict[str, Any], now: int) -> None:
    created = parse_time(body["created"], "created")
    expires = parse_time(body["expires"], "expires")
    if expires <= created:
        raise Malformed("record expires before it is created")
    if created > now + MAX_CLOCK_SKEW_S:
        raise NotYetValid("record is created in the future")
    if now >= expires:
        raise Expired("record has expired")


class Store:
    """What a node holds for others, bounded by count and bytes, per key and in total."""

    def __init__(self, *, max_per_key: int = MAX_RECORDS_PER_KEY,
                 max_records: int = MAX_STORE_RECORDS, max_bytes: int = MAX_STORE_BYTES) -> None:
        self.max_per_key = max_per_key
        self.max_records = max_records
        self.max_bytes = max_bytes
        self._by_key: dict[str, dict[str, Value]] = {}  # key -> slot -> value
        self.count = 0
        self.bytes = 0

    def put(self, value: Value, now: int) -> str:
        """Store a verified value. Returns ``stored``, ``replaced`` or ``unchanged``;
        raises ``Rejected`` (``stale``, ``full``) when it is refused."""
        if value.expires <= now:
            raise Expired("record has expired")
        slots = self._by_key.get(value.key)
        old = slots.get(value.slot) if slots is not None else None
        if old is not None:
            if old.id == value.id:
                return "unchanged"
            if value.order <= old.order:
                what = "seq" if value.doc_type == records.TYPE else "version"
                raise Rejected(f"a record with {what} {old.order} is already stored",
                               slug="stale")
            self._drop(old)
            self._insert(value)
            return "replaced"
        self.expire(now)
        if slots is not None and len(slots) >= self.max_per_key:
            raise Rejected(f"key {value.key} already holds {self.max_per_key} records",
                           slug="full")
        if self.count >= self.max_records or self.bytes + value.size > self.max_bytes:
            raise Rejected("the store is full", slug="full")
        self._insert(value)
        return "stored"

    def get(self, key: str, now: int) -> list[Value]:
        """Unexpired values under ``key``, ordered by document id (for paging)."""
        slots = self._by_key.get(key)
        if not slots:
            return []
        live = [v for v in slots.values() if v.expires > now]
        if len(live) != len(slots):
            for v in list(slots.values()):
                if v.expires <= now:
                    self._drop(v)
        return sorted(live, key=lambda v: v.id)

    def expire(self, now: int) -> int:
        gone = [v for slots in self._by_key.values() for v in slots.values() if v.expires <= now]
        for v in gone:
            self._drop(v)
        return len(gone)

    def keys(self) -> list[str]:
        return list(self._by_key)

    def values(self) -> Iterator[Value]:
        for slots in list(self._by_key.values()):
            yield from list(slots.values())

    def _insert(self, v: Value) -> None:
        self._by_key.setdefault(v.key, {})[v.slot] = v
        self.count += 1
        self.bytes += v.size

    def _drop(self, v: Value) -> None:
        slots = self._by_key.get(v.key)
        if slots is None or slots.get(v.slot) is not v:
            return
        del slots[v.slot]
        if not slots:
            del self._by_key[v.key]
        self.count -= 1
        self.bytes -= v.size


def target_of(key: str) -> int:
    return key_id(check_key(key))


@dataclass
class Published:
    """An owner's record and when it must be published again."""

    envelope: dict[str, Any]
    keys: list[str]
    next_at: float


class Republisher:
    """Which of our own records are due for publishing (clock injected)."""

    def __init__(self, interval: float = REPUBLISH_S) -> None:
        self.interval = interval
        self._items: dict[str, Published] = {}  # by slot-ish name

    def set(self, name: str, env: dict[str, Any], keys: list[str], now: float) -> None:
        self._items[name] = Published(env, keys, now)  # due at once

    def due(self, now: float) -> list[Published]:
        out = [p for p in self._items.values() if p.next_at <= now]
        for p in out:
            p.next_at = now + self.interval
        return out

    def remove(self, name: str) -> None:
        self._items.pop(name, None)


class Collector:
    """The client side of a GET: verify what holders return, keep the newest per slot.

    ``add`` returns the values that are new or newer than what was reported
    before (report those), and counts every refused record by reason in
    ``rejected``: a forged, expired, oversize or misfiled record is never
    reported. Verification of one document id happens once. ``forged`` says how
    many records of the last ``add`` no honest holder would have served (anything
    refused but for its time window or an untrusted signer): the holder that sent
    them is to be distrusted (``Lookup.on_bad``, ``RoutingTable.penalize``).
    """

    def __init__(self, key: str, keyring: Keyring | None = None,
                 max_values: int = 10_000) -> None:
        self.key = check_key(key)
        self.keyring = keyring
        self.max_values = max_values
        self.best: dict[str, Value] = {}
        self.rejected: dict[str, int] = {}
        self._checked: set[str] = set()
        self.forged = 0
        self._holders: dict[str, set[str]] = {}  # document id -> holders that returned it

    def add(self, records: list[Any], now: int, holder: str | None = None) -> list[Value]:
        out: list[Value] = []
        self.forged = 0
        for obj in records:
            try:
                doc = envelope.parse(obj).id
                if doc in self._checked:
                    if holder is not None and doc in self._holders:
                        self._holders[doc].add(holder)
                    continue  # this body was verified already (under a good signature)
                v = verify_value(obj, self.key, now, self.keyring)
            except Exception as e:  # any record a holder returns: drop and count it
                slug = e.slug if isinstance(e, PhaseError) else "malformed"
                self.rejected[slug] = self.rejected.get(slug, 0) + 1
                if slug not in HONEST_REFUSALS:
                    self.forged += 1
                continue
            self._checked.add(v.id)
            if holder is not None and len(self._holders) < self.max_values:
                self._holders[v.id] = {holder}
            old = self.best.get(v.slot)
            if old is not None and old.order >= v.order:
                continue
            if old is None and len(self.best) >= self.max_values:
                continue
            self.best[v.slot] = v
            out.append(v)
        return out


    def agreeing(self, slot: str) -> int:
        """How many holders returned the newest record of ``slot`` (0 if none did)."""
        v = self.best.get(slot)
        return 0 if v is None else len(self._holders.get(v.id, ()))


def last_id(recs: list[Any]) -> str | None:
    """The highest document id in a page of records (the cursor for the next page)."""
    ids = []
    for r in recs:
        with contextlib.suppress(Exception):  # a hostile record gives no cursor
            ids.append(envelope.parse(r).id)
    return max(ids) if ids else None


def implied_keys(env: dict[str, Any], now: int, keyring: Keyring | None = None) -> list[str]:
    """Every key a signed record belongs under (verifying it first; raises if it fails)."""
    e = envelope.parse(env)
    if e.type == records.TYPE:
        probe = node_key(str(e.body.get("node_id")))
    else:
        probe = boot_key(str(e.body.get("channel")), str(e.body.get("arch")))
    v = verify_value(env, probe, now, keyring)
    return record_keys(v.body, v.doc_type)
