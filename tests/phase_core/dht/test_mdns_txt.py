"""The mDNS TXT encoding of a signed node record (no network)."""

from __future__ import annotations

import time

import pytest

from phase_core import envelope, records
from phase_core.aio import mdns
from phase_core.errors import PhaseError
from phase_core.identity import Identity

CAPS = {"arch": "x86_64", "cpu_cores": 8, "memory_bytes": 16 << 30,
        "memory_available_bytes": 9 << 30,
        "runtimes": [{"name": "wasmtime", "version": "50.0.1"}],
        "features": ["wasi-preview1", "fuel", "epoch-timeout", "memory-limit", "deterministic"],
        "boot": [{"channel": "stable", "arch": "x86_64", "url": "http://10.0.0.1:8080"}]}


def rec(who: Identity) -> dict:  # type: ignore[type-arg]
    body = records.build(node_id=who.node_id, addresses=["10.0.0.1:4433", "[fd00::1]:4433"],
                         capabilities=CAPS, seq=5, now=int(time.time()))
    return envelope.sign(records.TYPE, body, [who])


def test_round_trip_fits_and_verifies() -> None:
    who = Identity(bytes([3]) * 32)
    env = rec(who)
    props = mdns.encode_txt(env, 4433)
    assert sum(len(k) + len(v) + 2 for k, v in props.items()) <= mdns.MAX_TXT_BYTES
    assert all(len(k) + len(v) + 1 <= 255 for k, v in props.items())
    assert props[b"boot"] == b"1"
    v = mdns.decode_txt(dict(props), int(time.time()))
    assert v.envelope == env


@pytest.mark.parametrize("attack", ["flip_sig", "other_id", "flip_body", "bomb", "missing"])
def test_forged_txt_is_refused(attack: str) -> None:
    who, other = Identity(bytes([3]) * 32), Identity(bytes([4]) * 32)
    props: dict[bytes, bytes | None] = dict(mdns.encode_txt(rec(who), 4433))
    if attack == "flip_sig":
        sig = props[b"sig"]
        assert sig is not None
        props[b"sig"] = bytes([sig[0] ^ 1]) + sig[1:]
    elif attack == "other_id":
        props[b"id"] = other.node_id.encode()
    elif attack == "flip_body":
        props[b"r0"] = b"\x00" + (props[b"r0"] or b"")[1:]
    elif attack == "bomb":
        import zlib
        props[b"r0"] = zlib.compress(b"[" * 10_000_000)[:240]
        for i in range(1, 10):
            props.pop(f"r{i}".encode(), None)
    elif attack == "missing":
        del props[b"sig"]
    with pytest.raises(PhaseError):
        mdns.decode_txt(props, int(time.time()))
