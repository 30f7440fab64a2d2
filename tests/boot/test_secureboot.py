"""Phase Boot under enforced Secure Boot in QEMU (OVMF_CODE_4M.secboot.fd, SMM, q35).

The module makes a DEVELOPMENT ONLY PK/KEK/db set with boot/keys and runs the Secure
Boot step of boot/build (boot/lib/secureboot.sh) on the build, with the test provider
in the signed command line (under Secure Boot nothing else can set it). Then:
  2. the firmware refuses a tampered and an unsigned UKI (the kernel never starts);
  3. under lockdown kexec_file_load refuses an unsigned kernel that the manifest names
     and hashes correctly: the init says so and stops (powers off) instead of hanging;
  4. the same for a kernel signed by a key that is not enrolled (ENOKEY).
Test 1, the signed chain into the node stage (Secure Boot on, lockdown, db in the
platform keyring, kexec_file_load of the db-signed kernel), is boot/README.md's Secure
Boot quickstart run as written: test_quickstart.py.
Without the tools they skip, naming them; under CI=true they fail.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.boot import vm
from tests.boot.conftest import BOOT, Built, Provider
from tests.boot.test_qemu import log_path, parallel, stage2_cmdline

pytestmark = pytest.mark.slow

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
SB_TOOLS = ("sbsign", "sbattach", "sbverify", "openssl", "objcopy", "mcopy")
# the test's cmdline, signed into the UKI: the provider, a stop that powers off, one try
SB_CHAIN = "panic=-1 phase.rescue=poweroff phase.retries=1 phase.discover_timeout=10"
# systemd-boot's words when the firmware's LoadImage refuses the entry's UKI
REFUSED = (r"Error loading \\EFI\\phase\\phase-boot-internet\.efi: "
           r"(Access Denied|Security Violation)")


def secure_boot_args(vars_fd: Path) -> list[str]:
    """QEMU with enforced Secure Boot: SMM-protected variables, the secboot OVMF build."""
    return ["-machine", "q35,smm=on", "-global", "driver=cfi.pflash01,property=secure,value=on",
            "-global", "ICH9-LPC.disable_s3=1",
            "-drive", f"if=pflash,format=raw,unit=0,file={OVMF_CODE},readonly=on",
            "-drive", f"if=pflash,format=raw,unit=1,file={vars_fd}"]


def require_sb_tools() -> None:
    missing = [t for t in SB_TOOLS if shutil.which(t) is None]
    missing += [str(p) for p in (OVMF_CODE, OVMF_VARS) if not p.exists()]
    if not missing:
        return
    msg = f"Secure Boot tests need {', '.join(missing)} (.ci/apt-packages.txt: sbsigntool, ovmf)"
    if os.environ.get("CI") == "true":
        pytest.fail(msg + "; CI must run them", pytrace=False)
    pytest.skip(msg)


@dataclass
class SecureBoot:
    keys: Path
    dest: Path
    provider: Provider
    seconds: float

    @property
    def signed_kernel(self) -> Path:
        return self.dest / "vmlinuz.signed"

    def disk(self, tmp: Path, name: str, uki: Path | None = None) -> tuple[Path, Path]:
        """A copy of the signed disk (its menu without a timeout) and of the variables;
        ``uki`` replaces the internet entry's UKI on the ESP."""
        disk, vars_fd = tmp / f"{name}.img", tmp / f"{name}-vars.fd"
        subprocess.run(["cp", "--sparse=always", str(self.dest / "phase-boot.img"), str(disk)],
                       check=True)
        shutil.copyfile(self.dest / "OVMF_VARS_4M.fd", vars_fd)
        conf = tmp / f"{name}-loader.conf"
        conf.write_text("default phase-internet.conf\ntimeout 0\n")  # not signed: a menu
        esp = f"{disk}@@1M"
        subprocess.run(["mcopy", "-o", "-i", esp, str(conf), "::/loader/loader.conf"], check=True)
        if uki is not None:
            subprocess.run(["mcopy", "-o", "-i", esp, str(uki),
                            "::/EFI/phase/phase-boot-internet.efi"], check=True)
        return disk, vars_fd


def signed_image(built: Built, tmp: Path, keys: Path) -> SecureBoot:
    """A provider, and the signing step of boot/build with its URL in the signed cmdline."""
    prov = Provider(tmp / "provider")
    start = time.monotonic()
    dest = tmp / "signed"
    r = subprocess.run(["sh", str(BOOT / "lib" / "secureboot.sh"), f"--keys={keys}",
                        f"--out={built.out}", f"--dest={dest}", "--modes=internet",
                        f"--cmdline=phase.provider={prov.guest_url} {SB_CHAIN}"],
                       capture_output=True, text=True, check=False)
    if r.returncode != 0:
        prov.close()
        pytest.fail(f"boot/lib/secureboot.sh failed (exit {r.returncode}):\n{r.stderr[-3000:]}",
                    pytrace=False)
    return SecureBoot(keys, dest, prov, time.monotonic() - start)


@pytest.fixture(scope="module")
def sb(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBoot]:
    require_sb_tools()
    keys = built.out / "secureboot-keys"
    for _ in range(2):  # the second run proves boot/keys leaves a complete set alone
        r = subprocess.run([str(BOOT / "keys"), str(keys)], capture_output=True, text=True,
                           check=False)
        assert r.returncode == 0 and "DEVELOPMENT ONLY" in r.stderr, r.stderr
    assert "already" in r.stderr
    image = signed_image(built, tmp_path_factory.mktemp("secureboot"), keys)
    print(f"signing step in {image.seconds:.1f} s")
    try:
        yield image
    finally:
        image.provider.close()


def publish(sb: SecureBoot, kernel: Path, tag: str, built: Built) -> int:
    from plasmd.provider import sign_boot_manifest

    env = sign_boot_manifest(kernel=kernel, initramfs=built.stage2, cmdline=stage2_cmdline(tag),
                             keys=built.keys, state_file=sb.provider.dir / "versions.json",
                             channel="stable", arch="x86_64",
                             mirrors=[sb.provider.guest_url], cas=sb.provider.cas,
                             manifests_dir=sb.provider.manifests)
    return int(env["body"]["version"])


def boot(sb: SecureBoot, tmp: Path, name: str, until: str, timeout_s: float = 300,
         uki: Path | None = None) -> vm.VMRun:
    disk, vars_fd = sb.disk(tmp, name, uki)
    return vm.run(log_path(name), disk=disk, until=until, timeout_s=timeout_s,
                  extra=secure_boot_args(vars_fd))


def strip_signature(src: Path, dest: Path) -> Path:
    shutil.copyfile(src, dest)
    while "signature 1" in subprocess.run(["sbverify", "--list", str(dest)], capture_output=True,
                                          text=True, check=False).stdout:
        subprocess.run(["sbattach", "--remove", str(dest)], check=True, capture_output=True)
    return dest


# -- 2 -------------------------------------------------------------------------------
def test_sb_2_firmware_refuses_a_tampered_or_unsigned_uki(sb: SecureBoot,
                                                         tmp_path: Path) -> None:
    signed = sb.dest / "phase-boot-internet.efi"
    tampered = tmp_path / "tampered.efi"
    data = bytearray(signed.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit inside the embedded initramfs
    tampered.write_bytes(bytes(data))
    unsigned = strip_signature(signed, tmp_path / "unsigned.efi")
    ukis = {"tampered": tampered, "unsigned": unsigned}
    start = time.monotonic()
    runs = parallel({case: functools.partial(boot, sb, tmp_path, f"sb2-{case}", REFUSED,
                                             timeout_s=180, uki=uki)
                     for case, uki in ukis.items()})
    for case, r in runs.items():
        assert r.matched, f"{case}: the firmware did not refuse the UKI\n{r.explain()}"
        assert "Linux version" not in r.log and "PHASE-BOOT" not in r.log, r.explain()
    print(f"2 refusals in {time.monotonic() - start:.1f} s")


# -- 3 and 4 ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def kexec_refusals(sb: SecureBoot, built: Built,
                   tmp_path_factory: pytest.TempPathFactory) -> dict[str, vm.VMRun]:
    """Valid manifests naming kernels the locked-down kernel must refuse, one boot each."""
    tmp = tmp_path_factory.mktemp("kexec-refusals")
    # Debian's kernel carries Debian's signature, which the kernel's built-in keys
    # accept: without it the image is unsigned (and still hashes as the manifest says)
    unsigned = strip_signature(built.kernel, tmp / "vmlinuz.unsigned")
    stranger = tmp / "stranger"
    subprocess.run(["openssl", "req", "-new", "-x509", "-newkey", "rsa:2048", "-sha256",
                    "-days", "30", "-nodes", "-subj", "/CN=not enrolled", "-keyout",
                    f"{stranger}.key", "-out", f"{stranger}.crt"], check=True,
                   capture_output=True)
    foreign = tmp / "vmlinuz.foreign"
    subprocess.run(["sbsign", "--key", f"{stranger}.key", "--cert", f"{stranger}.crt",
                    "--output", str(foreign), str(unsigned)], check=True, capture_output=True)
    # the provider is in the UKI's signed cmdline: a second signed image with its own
    # provider lets the two boots run side by side
    other = signed_image(built, tmp / "other", sb.keys)
    images = {"unsigned": (sb, unsigned), "foreign": (other, foreign)}

    def one(case: str) -> vm.VMRun:
        image, kernel = images[case]
        publish(image, kernel, f"sb-{case}", built)
        return boot(image, tmp, f"sb34-{case}", r"PHASE-STAGE2-OK.*|PHASE-BOOT poweroff|"
                    r"Kernel panic")

    try:
        start = time.monotonic()
        runs = parallel({case: functools.partial(one, case) for case in images})
        print(f"{len(runs)} kexec refusal boots in {time.monotonic() - start:.1f} s")
        return runs
    finally:
        other.provider.close()


def _refused(r: vm.VMRun, slug: str, words: str) -> None:
    marks = r.markers()
    assert "PHASE-BOOT lockdown mode=integrity" in marks, r.explain()
    assert not any(m.startswith(("PHASE-STAGE2-OK", "PHASE-BOOT kexec")) for m in marks), \
        r.explain()
    assert "PHASE-BOOT rescue reason=rejected" in marks, r.explain()
    stopped = [ln for ln in r.log.splitlines() if "STOPPED:" in ln]
    assert stopped and f"{slug}: kexec_file_load failed" in stopped[-1], r.explain()
    assert words in stopped[-1], r.explain()
    assert "PHASE-BOOT poweroff" in marks, r.explain()  # the rescue path, no hang


def test_sb_3_lockdown_refuses_an_unsigned_next_kernel_and_stops(
        kexec_refusals: dict[str, vm.VMRun]) -> None:
    # Debian's kernel enforces signed kexec under Secure Boot (the IMA arch policy), so
    # the refusal is its ENODATA, "no signature"; a kernel that only locks down says EPERM
    r = kexec_refusals["unsigned"]
    _refused(r, "kexec_unsigned", "it carries no signature")
    print(f"unsigned kernel refused, rescue path in {r.seconds:.1f} s")


def test_sb_4_lockdown_refuses_a_kernel_signed_by_a_key_not_enrolled(
        kexec_refusals: dict[str, vm.VMRun]) -> None:
    r = kexec_refusals["foreign"]
    _refused(r, "kexec_refused", "not made by a key it trusts")
    print(f"foreign-signed kernel refused, rescue path in {r.seconds:.1f} s")
