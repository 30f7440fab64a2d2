"""The Debian packages in a booted Debian 12 VM with systemd: install, a job and its
verified receipt, restart, stop while a job runs, the journal, the unit's exposure
score, the hardening left out and why, upgrade, remove, purge, policy-rc.d.

The steps run in file order on one VM; each asserts what it checks.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, script
from tests.deb.conftest import LINTIAN, V2, Client, timed
from tests.deb.vm import VM

EXAMPLES = ROOT / "packages" / "plasm-exec" / "examples" / "build"
HOME = "/var/lib/phase"
AS_PHASE = "runuser -u phase -- "
MAX_EXPOSURE = 2.0
STATE: dict[str, str] = {}


def node_status(vm: VM) -> dict[str, object]:
    out = vm.ok(AS_PHASE + f"plasmd status --home={HOME}")
    status: dict[str, object] = json.loads(out)
    return status


def main_pid(vm: VM) -> int:
    return int(vm.ok("systemctl show -p MainPID --value plasmd").strip())


def key_digest(vm: VM) -> str:
    return vm.ok(f"sha256sum {HOME}/key").split()[0]


def submit(vm: VM, client: Client, tmp: Path, module: str = "hello.wasm",
           *args: str, stdin: bytes = b"Hello, World") -> subprocess.Popen[bytes]:
    (tmp / "stdin").write_bytes(stdin)
    return subprocess.Popen([script("plasmd"), "submit", f"--home={client.home}",
                             str(EXAMPLES / module), f"--stdin={tmp / 'stdin'}",
                             f"--peer={STATE['node_id']}@127.0.0.1:{vm.port}",
                             f"--receipt={tmp / 'receipt.json'}", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(p: subprocess.Popen[bytes], timeout: float = 180) -> tuple[int, str, str]:
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def verify_receipt(tmp: Path, receipt: Path) -> dict[str, object]:
    """phase-verify, offline, with the VM's node id as the only trusted worker."""
    keyring = tmp / "workers.toml"
    if not keyring.exists():
        subprocess.run([script("phase-key"), "trust", f"--keyring={keyring}", "--name=vm",
                        "--role=worker", f"--public={STATE['node_id']}", "-q"],
                       check=True, timeout=60)
    r = subprocess.run([script("phase-verify"), f"--keys={keyring}", str(receipt)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    rec: dict[str, object] = json.loads(r.stdout.splitlines()[0])
    assert rec["type"] == "verified" and rec["signers"] == ["vm"], rec
    body = rec["body"]
    assert isinstance(body, dict) and body["worker"] == STATE["node_id"]
    return body


def hello(vm: VM, client: Client, tmp: Path) -> dict[str, object]:
    rc, out, err = finish(submit(vm, client, tmp))
    assert (rc, out) == (0, "dlroW ,olleH"), err
    return verify_receipt(tmp, tmp / "receipt.json")


def test_lintian_is_clean(vm: VM) -> None:
    """lintian on the packages (started beside the boot): no error or warning; the
    overrides are justified in packaging/deb/debian/*.lintian-overrides."""
    out, _ = LINTIAN[0].communicate(timeout=900)
    print("deb-test: lintian --profile=debian:\n" + out, flush=True)
    assert LINTIAN[0].returncode == 0, out
    assert not re.search(r"^[EW]: ", out, re.M), out


def readme_install_lines() -> list[str]:
    """The README's "Install on Debian/Ubuntu" block, one command per entry."""
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- deb-install:", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    lines = block.replace("\\\n", " ").splitlines()
    return [re.sub(r"\s+#.*$", "", x).strip() for x in lines if x.strip()]


def test_install_enables_and_starts_the_service(vm: VM) -> None:
    """The README's install line, as written, from a checkout whose
    packaging/deb/out/debian12 holds the packages packaging/deb/build made."""
    build, install, _ = readme_install_lines()
    assert build.startswith("packaging/deb/build")  # what the debs fixture runs
    start = time.monotonic()
    vm.ok("mkdir -p /root/checkout/packaging/deb/out && "
          "ln -sfn /mnt/debs/v1 /root/checkout/packaging/deb/out/debian12")
    vm.ok("cd /root/checkout && DEBIAN_FRONTEND=noninteractive " + install, 600)
    timed("install v1", start)
    assert vm.ok("systemctl is-active plasmd").strip() == "active"
    assert vm.ok("systemctl is-enabled plasmd").strip() == "enabled"
    # Type=notify: systemd marked the unit active because READY=1 arrived; the STATUS=
    # line of the same datagram is what systemd shows
    props = vm.ok("systemctl show -p Type -p StatusText -p NotifyAccess plasmd")
    assert "Type=notify" in props and "NotifyAccess=main" in props
    assert "StatusText=listening on quic://0.0.0.0:4433" in props
    assert vm.ok("getent passwd phase").split(":")[6].strip() == "/usr/sbin/nologin"
    assert vm.ok(f"stat -c '%U %a' {HOME}/key").strip() == "phase 600"
    assert vm.ok("stat -c %F /run/phase/plasmd.sock").strip() == "socket"
    assert vm.ok(f"readlink {HOME}/config.toml").strip() == "/etc/phase/config.toml"
    assert "/etc/phase/config.toml" in vm.ok("dpkg-query -W -f='${Conffiles}' plasmd")
    for f in ("/usr/share/doc/plasmd/README.md", "/usr/share/man/man1/plasmd.1.gz",
              "/usr/share/man/man1/phase-verify.1.gz", "/usr/lib/sysusers.d/plasmd.conf",
              "/usr/lib/tmpfiles.d/plasmd.conf"):
        vm.ok(f"test -s {f}")
    status = node_status(vm)
    # root too (PrivateUsers= maps root and phase into the service's namespace)
    assert json.loads(vm.ok(f"plasmd status --home={HOME}"))["node_id"] == status["node_id"]
    STATE["node_id"] = str(status["node_id"])
    STATE["key"] = key_digest(vm)
    assert status["pid"] == main_pid(vm)


def test_hello_job_from_the_host_with_a_verified_receipt(vm: VM, client: Client,
                                                         tmp_path: Path) -> None:
    # default deny: the host's key must be a trusted job submitter first, with the
    # README's line as written (only its <hex> placeholder filled in)
    trust = readme_install_lines()[2]
    assert "<hex>" in trust and trust.startswith("sudo -u phase phase-key trust")
    vm.ok(trust.replace("<hex>", client.public))
    start = time.monotonic()
    body = hello(vm, client, tmp_path)
    timed("hello job", start)
    assert body["exit_code"] == 0
    assert vm.ok(AS_PHASE + f"plasmd receipts --verify --home={HOME}").strip()


def test_restart_keeps_the_identity(vm: VM) -> None:
    pid = main_pid(vm)
    vm.ok("systemctl restart plasmd", 300)
    assert main_pid(vm) != pid
    assert key_digest(vm) == STATE["key"]
    assert node_status(vm)["node_id"] == STATE["node_id"]


def test_stop_drains_a_running_job(vm: VM, client: Client, tmp_path: Path) -> None:
    job = submit(vm, client, tmp_path, "spin.wasm", "--timeout=20s", stdin=b"")
    deadline = time.monotonic() + 120
    while True:
        jobs = node_status(vm).get("jobs")
        if isinstance(jobs, dict) and jobs.get("running") == 1:
            break
        assert job.poll() is None, finish(job)
        assert time.monotonic() < deadline, "the spin job never ran"
        time.sleep(0.5)
    vm.ok("systemctl stop plasmd", 300)  # returns once the node drained and exited
    rc, _, err = finish(job)
    assert rc == 152, err  # the job ran to its wall-clock fence and was delivered
    body = verify_receipt(tmp_path, tmp_path / "receipt.json")
    assert body["ended"] == "timeout"
    assert vm.ok("systemctl show -p Result --value plasmd").strip() == "success"
    vm.ok("systemctl start plasmd", 300)


def test_journal_has_the_json_logs(vm: VM) -> None:
    lines = [x for x in vm.ok("journalctl -u plasmd -o cat --no-pager").splitlines()
             if x.startswith("{")]
    records = [json.loads(x) for x in lines]
    assert any(r.get("type") == "node_started" and r.get("node_id") == STATE["node_id"]
               for r in records)
    assert all(isinstance(r.get("v"), int) for r in records)


def test_exposure_score(vm: VM) -> None:
    out = vm.ok("systemd-analyze security --no-pager plasmd.service")
    m = re.search(r"Overall exposure level for plasmd\.service: ([0-9.]+)", out)
    assert m, out
    score = float(m.group(1))
    print(f"deb-test: systemd-analyze security plasmd.service: {score} (limit {MAX_EXPOSURE})")
    assert score <= MAX_EXPOSURE
    STATE["score"] = str(score)


DROPIN = "/run/systemd/system/plasmd.service.d/excluded.conf"


def _with(vm: VM, lines: str) -> None:
    vm.ok(f"mkdir -p {Path(DROPIN).parent} && printf '[Service]\\n{lines}\\n' > {DROPIN} "
          "&& systemctl daemon-reload")
    vm.run("systemctl restart plasmd", 300)


@pytest.mark.parametrize("directive, breaks", [
    ("MemoryDenyWriteExecute=yes", "failed to make memory executable"),
    ("PrivateNetwork=yes", "handshake"),
    ("IPAddressDeny=any", "handshake"),
])
def test_excluded_directive_breaks_the_node(vm: VM, client: Client, tmp_path: Path,
                                            directive: str, breaks: str) -> None:
    """Each hardening directive the unit leaves out, added back: what it breaks."""
    try:
        _with(vm, directive)
        if vm.run("systemctl is-active plasmd").out.strip() != "active":
            log = vm.ok("journalctl -u plasmd -o cat --no-pager -n 30")
            assert breaks in log, log  # the node cannot start
            return
        rc, out, err = finish(submit(vm, client, tmp_path))
        assert rc != 0 and out != "dlroW ,olleH"
        log = err + vm.ok("journalctl -u plasmd -o cat --no-pager -n 30")
        assert breaks in log, log
    finally:
        _without_dropin(vm)


def _without_dropin(vm: VM) -> None:
    vm.ok(f"rm -f {DROPIN} && systemctl daemon-reload && systemctl reset-failed plasmd; "
          "systemctl restart plasmd", 300)


def test_without_netlink_the_node_runs_but_names_no_address(vm: VM, client: Client,
                                                            tmp_path: Path) -> None:
    """AF_NETLINK left out: the interfaces cannot be listed, so the node starts with no
    addresses in its record and says why, and still runs jobs (the unit keeps
    AF_NETLINK so that a LAN node can name its addresses)."""
    try:
        _with(vm, "RestrictAddressFamilies=\\nRestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX")
        assert vm.run("systemctl is-active plasmd").out.strip() == "active"
        assert node_status(vm)["listen"] == []  # its addresses
        log = vm.ok("journalctl -u plasmd -o cat --no-pager -n 30")
        assert "node.addresses_unknown" in log and "netlink" in log, log
        hello(vm, client, tmp_path)
    finally:
        _without_dropin(vm)


def test_upgrade_keeps_identity_keyring_and_receipts(vm: VM, client: Client,
                                                    tmp_path: Path) -> None:
    assert vm.ok("systemctl is-active plasmd").strip() == "active"
    pid = main_pid(vm)
    entries = len(vm.ok(f"cat {HOME}/receipts.jsonl").splitlines())
    assert entries >= 2
    start = time.monotonic()
    vm.ok("apt-get install -y --no-install-recommends /mnt/debs/v2/*.deb", 600)
    timed("upgrade to v2", start)
    assert vm.ok("dpkg-query -W -f='${Version}' plasmd phase-tools") == V2 + V2
    assert vm.ok("systemctl is-active plasmd").strip() == "active"
    assert main_pid(vm) != pid  # restarted on the new code
    assert key_digest(vm) == STATE["key"]
    assert node_status(vm)["node_id"] == STATE["node_id"]
    assert client.public in vm.ok(f"cat {HOME}/keyring.toml")
    vm.ok(AS_PHASE + f"plasmd receipts --verify --home={HOME}")
    hello(vm, client, tmp_path)
    assert len(vm.ok(f"cat {HOME}/receipts.jsonl").splitlines()) == entries + 1


def test_remove_stops_the_service_and_keeps_state(vm: VM) -> None:
    vm.ok("apt-get remove -y plasmd", 300)
    assert vm.run("systemctl is-active plasmd").out.strip() in ("inactive", "unknown")
    assert vm.run("pgrep -u phase").rc == 1  # no process of the node left
    assert key_digest(vm) == STATE["key"]
    vm.ok("test -f /etc/phase/config.toml")  # conffiles stay until purge
    vm.ok("phase-key --version")  # phase-tools stays


def test_purge_removes_the_state(vm: VM) -> None:
    vm.ok("apt-get purge -y plasmd", 300)
    vm.ok(f"test ! -e {HOME} && test ! -e /etc/phase/config.toml")
    assert "plasmd" not in vm.ok("dpkg-query -W -f='${Package} ${Status}\\n' || true")


def test_install_respects_policy_rc_d(vm: VM) -> None:
    """With a policy-rc.d forbidding starts (as in a chroot or image build), the
    package enables the unit and makes the identity, but does not start it."""
    vm.ok("printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d && "
          "chmod 755 /usr/sbin/policy-rc.d")
    try:
        vm.ok("apt-get install -y --no-install-recommends /mnt/debs/v2/plasmd_*.deb", 600)
        assert vm.run("systemctl is-active plasmd").out.strip() == "inactive"
        assert vm.ok("systemctl is-enabled plasmd").strip() == "enabled"
        assert key_digest(vm) != STATE["key"]  # purged before: a new identity
    finally:
        vm.ok("rm -f /usr/sbin/policy-rc.d")
    vm.ok("systemctl start plasmd", 300)
    assert vm.ok("systemctl is-active plasmd").strip() == "active"
