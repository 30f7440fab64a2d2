import pytest

from phase_core import boot, documents, envelope, records
from phase_core.canonical import content_id
from phase_core.documents import Mark, Policy
from phase_core.errors import Expired, Malformed, NotYetValid, Rollback
from phase_core.identity import Identity
from phase_core.timefmt import format_time, parse_time
from phase_core.trust import Keyring, format_entry

S1, S2 = Identity(b"\x05" * 32), Identity(b"\x06" * 32)
NOW = parse_time("2026-11-27T03:26:44Z")
KR = Keyring.parse(("[thresholds]\nboot-signer = 2\n"
                    + format_entry("s1", S1.node_id, ["boot-signer"])
                    + format_entry("s2", S2.node_id, ["boot-signer"])).encode())


def bm(version, lifetime=3600, now=NOW):
    b = boot.build(channel="stable", arch="x86_64", version=version, now=now,
                   lifetime_s=lifetime, kernel={"id": content_id(b"k"), "size": 1},
                   initramfs={"id": content_id(b"i"), "size": 1}, cmdline="quiet",
                   mirrors=["http://127.0.0.1:1/"])
    return envelope.sign("boot_manifest", b, [S1, S2])


def test_time_format_round_trip_and_strictness():
    assert format_time(NOW) == "2026-11-27T03:26:44Z"
    for bad in ("2026-11-27 03:26:44Z", "2026-11-27T03:26:44+00:00", "2026-02-30T00:00:00Z",
                "2026-11-27T03:26:44.5Z", 1234):
        with pytest.raises(Malformed):
            parse_time(bad)


def test_expiry_and_not_yet_valid_use_the_injected_clock():
    env = bm(1, lifetime=3600)
    documents.verify(env, Policy(KR, NOW))
    documents.verify(env, Policy(KR, NOW + 3599))
    with pytest.raises(Expired):
        documents.verify(env, Policy(KR, NOW + 3600))
    with pytest.raises(NotYetValid):
        documents.verify(env, Policy(KR, NOW - 3600))
    documents.verify(env, Policy(KR, NOW - 60))  # small clock skew is tolerated


def test_rollback_is_checked_after_signatures_and_against_marks():
    v7 = documents.verify(bm(7), Policy(KR, NOW))
    marks = {"boot/stable/x86_64": Mark(7, v7.id)}
    with pytest.raises(Rollback, match="older"):
        documents.verify(bm(5), Policy(KR, NOW, marks=marks))
    documents.verify(bm(7), Policy(KR, NOW, marks=marks))  # the same document again
    with pytest.raises(Rollback, match="differs"):
        documents.verify(bm(7, lifetime=7200), Policy(KR, NOW, marks=marks))
    documents.verify(bm(8), Policy(KR, NOW, marks=marks))


def test_forged_old_manifest_fails_signature_before_rollback():
    env = bm(5)
    env["body"]["version"] = 9
    from phase_core.errors import BadSignature
    with pytest.raises(BadSignature):
        documents.verify(env, Policy(KR, NOW, marks={"boot/stable/x86_64": Mark(7, "x")}))


def test_node_record_is_self_signed_and_newer_sequence_wins():
    node = Identity(b"\x09" * 32)
    caps = {"arch": "x86_64", "cpu_cores": 2, "memory_bytes": 1 << 30,
            "runtimes": [{"name": "wasmtime", "version": "50.0.1"}], "features": [],
            "future_field": {"ok": True}}
    b1 = records.build(node_id=node.node_id, addresses=["127.0.0.1:1"],
                       capabilities=caps, seq=1, now=NOW)
    b2 = dict(b1, seq=2)
    v = documents.verify(envelope.sign("node_record", b1, [node]), Policy(Keyring(), NOW))
    assert v.signers[0].key == node.node_id
    assert records.newer(b2, b1) and not records.newer(b1, b2)
