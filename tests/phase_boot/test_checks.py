"""phase-boot in-process with the test vectors: what it accepts, what it refuses, and why.

Every run is --dry-run: everything but kexec_file_load and the reboot.
"""

from __future__ import annotations

import json

from phase_core.canonical import canonical
from phase_core.envelope import document_id
from phase_core.state import StateStore
from tests.phase_boot.conftest import Boot, vector


def test_accepts_a_fetched_manifest_and_says_what_it_would_load(bt: Boot) -> None:
    bt.files()
    env = bt.manifest()
    keep, summary = bt.dir / "keep.json", bt.dir / "summary.txt"
    r = bt.run("--mode=private", "--channel=stable", f"--keep={keep}", f"--summary={summary}")
    assert r.code == 0, r.err
    [rec] = r.records
    assert rec["type"] == "kexec" and rec["dry_run"] is True and rec["loaded"] is False
    assert rec["version"] == 7 and rec["id"] == document_id("boot_manifest", env["body"])
    assert rec["signers"] == ["boot-1", "boot-2"]
    assert rec["kernel"] == {"id": env["body"]["kernel"]["id"], "size_bytes": 6,
                             "path": str(bt.dir / "out" / "kernel")}
    # the signed cmdline says phase.mode=local: the local choice replaces it, once
    assert rec["cmdline"] == "console=ttyS0 phase.mode=private phase.channel=stable"
    assert keep.read_bytes() == canonical(env) + b"\n"  # the verified cache
    assert summary.read_text() == (f"version=7 id={rec['id']} channel=stable arch=x86_64 "
                                   f"cmdline={rec['cmdline']}\n")


def test_reads_a_file_argument_like_stdin(bt: Boot) -> None:
    bt.files()
    bt.manifest()
    r = bt.run(stdin=False)
    assert r.code == 0 and r.records[0]["version"] == 7


def test_newest_manifest_wins(bt: Boot) -> None:
    bt.files()
    bt.manifest("rollback/boot-v5.json")
    bt.manifest("rollback/boot-v8.json")
    bt.manifest("valid/boot_manifest.json")
    r = bt.run()
    assert r.code == 0 and [x["version"] for x in r.records] == [8]


def test_tampered_kernel_is_rejected(bt: Boot) -> None:
    bt.files(kernel=b"kernek")  # same size, other bytes
    bt.manifest()
    summary = bt.dir / "summary.txt"
    r = bt.run(f"--summary={summary}")
    assert r.code == 1 and "digest_mismatch" in r.error_slugs
    # its own rejection travels as an error record too, like every stage's
    assert [(x["type"], x["error"], x["exit_code"]) for x in r.records] == [
        ("error", "digest_mismatch", 1)]
    assert summary.read_text().startswith("digest_mismatch: the kernel at ")


def test_a_longer_initramfs_is_rejected(bt: Boot) -> None:
    bt.files(initramfs=b"initramfs and more")
    bt.manifest()
    r = bt.run()
    assert r.code == 1 and "digest_mismatch" in r.error_slugs


def test_wrong_signer_is_rejected(bt: Boot) -> None:
    bt.files()
    bt.manifest("invalid/untrusted_signer--boot-signed-by-job-keys.json")
    r = bt.run()
    assert r.code == 1 and "untrusted_signer" in r.error_slugs


def test_one_signer_of_two_is_rejected(bt: Boot) -> None:
    bt.files()
    bt.manifest("invalid/threshold--boot-one-trusted-one-rogue.json")
    r = bt.run()
    assert r.code == 1 and "threshold" in r.error_slugs


def test_rollback_below_the_mark_is_rejected(bt: Boot) -> None:
    v8 = vector("rollback/boot-v8.json")
    StateStore(bt.state).commit_mark("boot/stable/x86_64", 8,
                                     document_id("boot_manifest", v8["body"]))
    bt.files()
    bt.manifest()  # version 7
    r = bt.run()
    assert r.code == 1 and "rollback" in r.error_slugs


def test_same_version_other_document_is_rejected(bt: Boot) -> None:
    v7 = vector("valid/boot_manifest.json")
    StateStore(bt.state).commit_mark("boot/stable/x86_64", 7,
                                     document_id("boot_manifest", v7["body"]))
    bt.files()
    bt.manifest("rollback/boot-v7-other.json")
    assert bt.run().code == 1
    bt.lines.clear()
    bt.files()
    bt.manifest()  # the very manifest the mark names is fine
    assert bt.run().code == 0


def test_expired_manifest_is_rejected(bt: Boot) -> None:
    bt.files()
    bt.manifest("invalid/expired--boot-manifest.json")
    r = bt.run()
    assert r.code == 1 and "expired" in r.error_slugs


def test_tampered_envelope_is_rejected_whatever_the_record_says(bt: Boot) -> None:
    bt.files()
    env = vector("invalid/bad_signature--boot-kernel-swapped.json")
    bt.add({"v": 1, "type": "verified", "doc_type": "boot_manifest",
            "body": vector("valid/boot_manifest.json")["body"], "envelope": env})
    r = bt.run()
    assert r.code == 1 and "bad_signature" in r.error_slugs


def test_manifest_for_another_channel_is_rejected(bt: Boot) -> None:
    bt.files()
    bt.manifest()
    r = bt.run("--channel=beta")
    assert r.code == 1 and "wrong_channel" in r.error_slugs
    r = bt.run("--arch=aarch64")
    assert r.code == 1 and "wrong_channel" in r.error_slugs


def test_missing_file_is_missing_input(bt: Boot) -> None:
    bt.files()
    (bt.dir / "out" / "initramfs").unlink()
    bt.manifest()
    r = bt.run()
    assert r.code == 66 and "missing_input" in r.error_slugs


def test_no_blob_record_is_missing_input(bt: Boot) -> None:
    bt.manifest()
    r = bt.run()
    assert r.code == 66 and "no blob record" in r.err


def test_empty_input_is_missing_input(bt: Boot) -> None:
    r = bt.run()
    assert r.code == 66 and "missing_input" in r.error_slugs


def test_unknown_records_are_dropped_not_booted(bt: Boot) -> None:
    bt.files()
    bt.add({"v": 1, "type": "boot_provider", "url": "http://p"})
    bt.add(vector("valid/boot_manifest.json"))  # a bare envelope: not fetched, not booted
    r = bt.run()
    assert r.code == 66 and "no boot manifest in the input" in r.err


def test_malformed_line_is_bad_input(bt: Boot) -> None:
    bt.add('{"v": 1, "type": "verified", ')
    r = bt.run()
    assert r.code == 65 and "malformed" in r.error_slugs


def test_verified_record_without_envelope_is_bad_input(bt: Boot) -> None:
    bt.files()
    bt.add({"v": 1, "type": "verified", "doc_type": "boot_manifest",
            "body": vector("valid/boot_manifest.json")["body"]})
    r = bt.run()
    assert r.code == 65 and "without its envelope" in r.err


def test_blob_record_with_a_bad_id_is_bad_input(bt: Boot) -> None:
    bt.add({"v": 1, "type": "blob", "id": "md5:abc", "path": "/x"})
    assert bt.run().code == 65


def test_a_bad_line_does_not_hide_a_good_manifest(bt: Boot) -> None:
    bt.add("not json")
    bt.files()
    bt.manifest()
    r = bt.run()
    assert r.code == 0 and r.records[-1]["type"] == "kexec"


def test_upstream_errors_are_passed_on_and_decide_the_status(bt: Boot) -> None:
    err = {"v": 1, "type": "error", "error": "rollback", "message": "v5 < v7",
           "exit_code": 1, "source": "stdin:1"}
    bt.add(err)
    summary = bt.dir / "summary.txt"
    r = bt.run(f"--summary={summary}")
    # a rejection upstream stays a rejection (1), not "nothing here" (66)
    assert r.code == 1 and r.records == [err]
    assert summary.read_text() == "rollback: v5 < v7\n"


def test_upstream_error_without_a_code_counts_as_rejected(bt: Boot) -> None:
    bt.add({"v": 1, "type": "error", "error": "x", "exit_code": 900})
    assert bt.run("-q").code == 1  # -q: this broken record is passed on only otherwise
    bt.lines.clear()
    bt.add({"v": 1, "type": "error", "error": "unavailable", "message": "404", "exit_code": 69})
    bt.add({"v": 1, "type": "error", "error": "rollback", "message": "5 < 7", "exit_code": 1})
    assert bt.run().code == 69  # the worst wins: the retry-able one


def test_a_loadable_manifest_wins_over_upstream_errors(bt: Boot) -> None:
    bt.add({"v": 1, "type": "error", "error": "rollback", "message": "5 < 7", "exit_code": 1})
    bt.files()
    bt.manifest()
    r = bt.run()
    assert r.code == 0 and [x["type"] for x in r.records] == ["error", "kexec"]


def test_quiet_prints_nothing(bt: Boot) -> None:
    bt.add({"v": 1, "type": "error", "error": "rollback", "message": "5 < 7", "exit_code": 1})
    bt.files()
    bt.manifest()
    r = bt.run("-q")
    assert r.code == 0 and r.out == ""


def test_summary_names_errors_from_earlier_logs(bt: Boot) -> None:
    log = bt.dir / "discover.err"
    log.write_text("".join(json.dumps(x) + "\n" for x in (
        {"v": 1, "type": "log", "level": "warning", "error": "bad_signature",
         "message": "manifest from http://p dropped"},
        {"v": 1, "type": "log", "level": "info", "event": "x"},
        {"v": 1, "type": "log", "level": "warning", "error": "unavailable",
         "message": "nothing found in 10 s\x1b[2J"})) + "not json\n")
    summary = bt.dir / "summary.txt"
    r = bt.run(f"--log={log}", f"--log={bt.dir / 'absent.err'}", f"--summary={summary}")
    assert r.code == 66
    text = summary.read_text()
    assert text.startswith("missing_input: no records in the input [before that: ")
    assert "bad_signature: manifest from http://p dropped" in text
    assert "unavailable: nothing found in 10 s?[2J" in text  # no escape reaches a console


def test_bad_keyring_and_state(bt: Boot) -> None:
    bt.files()
    bt.manifest()
    bad = bt.dir / "bad.toml"
    bad.write_text("[nope]\n")
    assert bt.run(f"--keys={bad}").code == 78
    assert bt.run(f"--keys={bt.dir / 'absent.toml'}").code == 66
    bt.state.write_text("{broken")
    assert bt.run().code == 78


def test_usage_errors(bt: Boot) -> None:
    assert bt.run("--load-only", "--dry-run").code == 64
    assert bt.run("--mode=turbo").code == 64
    assert bt.run("--channel=Bad Channel").code == 64
    assert bt.run("--now=yesterday").code in (64, 65)


def test_a_blob_copy_in_out_dir_is_preferred_to_the_store_path(bt: Boot) -> None:
    from tests.phase_boot.conftest import KERNEL, blob_rec

    bt.files()
    good = bt.dir / "out" / "kernel"
    rec = json.loads(bt.lines[0])
    rec["out"], rec["path"] = str(good), str(bt.dir / "no-such-store-file")
    bt.lines[0] = json.dumps(rec)
    bt.manifest()
    r = bt.run()
    assert r.code == 0 and r.records[-1]["kernel"]["path"] == str(good)
    assert blob_rec(KERNEL, "kernel", good)["id"] == rec["id"]


def test_the_kexec_and_error_records_match_their_schemas(bt: Boot) -> None:
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    from tests.conftest import ROOT

    schemas = {p.name.removesuffix(".schema.json"): json.loads(p.read_text())
               for p in (ROOT / "docs" / "schemas").glob("*.schema.json")}
    registry: Registry = Registry().with_resources(
        (s["$id"], Resource.from_contents(s)) for s in schemas.values())
    bt.files()
    bt.manifest()
    good = bt.run().records
    bt.lines.clear()
    bt.files(kernel=b"kernek")
    bt.manifest()
    bad = bt.run().records
    assert [x["type"] for x in good + bad] == ["kexec", "error"]
    for rec in good + bad:
        Draft202012Validator(schemas[rec["type"]], registry=registry).validate(rec)
