import copy

import pytest

from phase_core import documents, envelope, manifest
from phase_core.canonical import content_id
from phase_core.errors import (
    BadSignature,
    Malformed,
    ThresholdNotMet,
    TooLarge,
    UntrustedSigner,
    WrongType,
)
from phase_core.identity import Identity
from phase_core.trust import Keyring, format_entry

A, B, C = (Identity(bytes([i]) * 32) for i in (1, 2, 3))
NOW = 1_900_000_000


def body():
    return manifest.build(module=content_id(b"m"), stdin=None, now=NOW - 10)


def keyring(*entries, thresholds=""):
    text = thresholds + "".join(format_entry(n, i.node_id, r) for n, i, r in entries)
    return Keyring.parse(text.encode())


def test_signing_message_is_domain_separated():
    b = body()
    assert envelope.signing_message("receipt", b) != envelope.signing_message("job_manifest", b)
    assert envelope.signing_message("job_manifest", b).startswith(b"phase:job_manifest:v1\n")


def test_document_id_does_not_depend_on_signers_or_order():
    b = body()
    e1 = envelope.sign("job_manifest", b, [A, B])
    e2 = envelope.sign("job_manifest", b, [B])
    assert envelope.parse(e1).id == envelope.parse(e2).id == envelope.document_id(
        "job_manifest", b)


def test_every_bit_of_the_body_is_covered():
    env = envelope.sign("job_manifest", body(), [A])
    for field in ("module", "nonce", "created"):
        t = copy.deepcopy(env)
        v = t["body"][field]
        t["body"][field] = v[:-1] + ("0" if v[-1] != "0" else "1")
        with pytest.raises(BadSignature):
            envelope.check_signatures(envelope.parse(t))


def test_receipt_signature_never_passes_as_manifest():
    env = envelope.sign("job_manifest", body(), [A])
    env["type"] = "receipt"
    with pytest.raises(BadSignature):
        envelope.check_signatures(envelope.parse(env))


def test_threshold_counts_distinct_trusted_keys_with_the_role():
    kr = keyring(("a", A, ["boot-signer"]), ("b", B, ["boot-signer"]), ("c", C, ["worker"]),
                 thresholds="[thresholds]\nboot-signer = 2\n")
    env = envelope.parse(envelope.sign("job_manifest", body(), [A, C]))
    with pytest.raises(ThresholdNotMet, match="1 trusted boot-signer"):
        envelope.trusted_signers(env, kr, "boot-signer")
    env2 = envelope.parse(envelope.sign("job_manifest", body(), [A, B]))
    assert {t.name for t in envelope.trusted_signers(env2, kr, "boot-signer")} == {"a", "b"}
    with pytest.raises(UntrustedSigner):
        envelope.trusted_signers(envelope.parse(envelope.sign("job_manifest", body(), [C])),
                                 kr, "boot-signer")


def test_cosign_adds_a_signature():
    env = envelope.sign("job_manifest", body(), [A])
    env2 = envelope.add_signature(env, B)
    assert [s["key"] for s in env2["signatures"]] == [A.node_id, B.node_id]
    envelope.check_signatures(envelope.parse(env2))
    with pytest.raises(ValueError):
        envelope.add_signature(env2, A)


@pytest.mark.parametrize("mutate, err", [
    (lambda e: e.update(extra=1), Malformed),
    (lambda e: e.pop("signatures"), Malformed),
    (lambda e: e.update(type="invoice"), WrongType),
    (lambda e: e.update(type="Not A Type"), Malformed),
    (lambda e: e.update(v=True), Malformed),
    (lambda e: e["signatures"].__setitem__(0, {"key": "ab", "sig": "cd"}), Malformed),
    (lambda e: e.update(signatures=[{"key": f"{i:064x}", "sig": "0" * 128} for i in range(17)]),
     TooLarge),
])
def test_structural_errors(mutate, err):
    env = envelope.sign("job_manifest", body(), [A])
    mutate(env)
    with pytest.raises(err):
        envelope.parse(env)


def test_verify_end_to_end_with_policy():
    kr = keyring(("alice", A, ["job-submitter"]))
    env = envelope.sign("job_manifest", body(), [A])
    v = documents.verify(env, documents.Policy(kr, NOW))
    assert v.type == "job_manifest" and [s.name for s in v.signers] == ["alice"]
    assert v.record()["type"] == "verified" and v.record()["envelope"] == env
    with pytest.raises(WrongType):
        documents.verify(env, documents.Policy(kr, NOW, expected_type="receipt"))
