"""boot/README.md's x86_64 quickstarts, run with ``sh`` as written (tests/boot/quickstart.py).

Each block runs whole: apt-get, boot/build, boot/release, the provider in the
background on port 8080, then QEMU in the foreground, whose console is watched until
the node stage's hello job and its verified receipt show (or a stop, or the deadline);
then the block's process group is killed and the port must be free again.

Substitutions (the only ones, reported by each run): ``sudo`` is dropped when the test
runs as root on a machine without sudo (the CI machine runs as root and has none), and
8080 becomes a free port only when something else holds 8080 (nothing in the suite
binds it on the host).

``test_sb_1_...`` is the Secure Boot quickstart and Secure Boot test 1: the signed
chain under enforced Secure Boot, lockdown, db in the platform keyring, kexec_file_load
of the db-signed kernel, and the node stage locked down again. Secure Boot tests 2-4
are in test_secureboot.py.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from tests.boot import quickstart
from tests.boot.conftest import OUT, require_toolchain
from tests.boot.test_qemu import _receipt, log_path
from tests.boot.test_secureboot import require_sb_tools

pytestmark = pytest.mark.slow

HELLO = "PHASE-BOOT hello stdout=dlroW ,olleH"
# the end of a run: the receipt verified (private mode's plasmd checks it in the
# handshake; otherwise phase-verify's record follows the marker), or a stop
UNTIL = (r"PHASE-BOOT receipt verified path=\S+ by=plasmd-submit"
         r"|PHASE-BOOT receipt verified path=[^\n]*\n[^\n]*\"doc_type\"[^\n]*\n"
         r"|PHASE-BOOT (receipt rejected|hello failed|rescue)[^\n]*\n|Kernel panic")


def in_order(marks: list[str], order: list[str]) -> list[int]:
    idx, at = [], 0
    for o in order:
        at = next((i for i in range(at, len(marks)) if marks[i].startswith(o)), -1)
        idx.append(at)
        if at < 0:
            break
    return idx


def released_version() -> tuple[int, dict[str, str]]:
    env = json.loads((OUT / "release" / "boot-manifest.json").read_text())
    return int(env["body"]["version"]), env["body"]["kernel"]


def check_ended(r: quickstart.Run) -> None:
    assert r.matched, r.explain()
    assert not r.left_running, f"still running after the kill: {r.left_running}"
    assert quickstart.port_free(r.port), f"port {r.port} still held after the run"
    print(f"substitutions: {r.substitutions or 'none'}")


def test_quickstart_vm_boots_to_hello_and_verified_receipt() -> None:
    require_toolchain()
    r = quickstart.run("vm", log_path("quickstart-vm"), until=UNTIL, timeout_s=900)
    check_ended(r)
    marks = r.markers()
    version, _ = released_version()
    order = ["PHASE-BOOT init mode=private stage=boot", "PHASE-BOOT discover ok",
             f"PHASE-BOOT loaded version={version}", "PHASE-BOOT kexec",
             "PHASE-BOOT init mode=private stage=node", HELLO, "PHASE-BOOT hello via=plasmd",
             "PHASE-BOOT receipt verified"]
    idx = in_order(marks, order)
    assert -1 not in idx, (dict(zip(order, idx, strict=False)), r.explain())
    print(f"README 'Quickstart: a VM' (build, release, provider, QEMU to the receipt) "
          f"in {r.seconds:.1f} s")


def test_sb_1_quickstart_signed_chain_locked_down_kexecs_db_signed_kernel_into_node() -> None:
    require_toolchain()
    require_sb_tools()
    r = quickstart.run("secure-boot", log_path("quickstart-secure-boot"), until=UNTIL,
                       timeout_s=1500)
    check_ended(r)
    log, marks = r.log, r.markers()
    # the firmware enforced Secure Boot, and the kernel saw it and locked itself down
    assert "EFI stub: UEFI Secure Boot is enabled." in log, r.explain()
    assert "secureboot: Secure boot enabled" in log, r.explain()
    assert "Kernel is locked down from EFI Secure Boot" in log, r.explain()
    # the db certificate is in the platform keyring that kexec_file_load verifies with
    assert "Loaded X.509 cert 'DEVELOPMENT ONLY - NOT FOR PRODUCTION: Phase Boot " \
           "DEVELOPMENT ONLY db" in log, r.explain()
    # the manifest names the db-signed kernel, and that is what was loaded and kexec'd
    version, kernel = released_version()
    signed = OUT / "secureboot" / "vmlinuz.signed"
    assert kernel["id"] == "sha256:" + hashlib.sha256(signed.read_bytes()).hexdigest()
    order = ["PHASE-BOOT lockdown mode=integrity", "PHASE-BOOT init mode=internet stage=boot",
             "PHASE-BOOT net up", "PHASE-BOOT discover ok", f"PHASE-BOOT loaded version={version}",
             "PHASE-BOOT kexec",
             # the kexec'd kernel: Secure Boot again, locked down again, the node stage
             "PHASE-BOOT lockdown mode=integrity", "PHASE-BOOT init mode=internet stage=node",
             HELLO, "PHASE-BOOT receipt verified"]
    idx = in_order(marks, order)
    assert -1 not in idx, (dict(zip(order, idx, strict=False)), r.explain())
    after_kexec = log[log.index("PHASE-BOOT kexec"):]
    assert "secureboot: Secure boot enabled" in after_kexec, r.explain()
    assert "Kernel is locked down from EFI Secure Boot" in after_kexec, r.explain()
    rec = _receipt(r)  # type: ignore[arg-type]
    assert rec["type"] == "verified" and rec["body"]["exit_code"] == 0
    assert rec["body"]["stdout"] == "sha256:" + hashlib.sha256(b"dlroW ,olleH").hexdigest()
    print(f"README 'Quickstart: a VM with Secure Boot enforced' (keys, signed build, release, "
          f"provider, QEMU to the receipt) in {r.seconds:.1f} s")

