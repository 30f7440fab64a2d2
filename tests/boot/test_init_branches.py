"""Test 8: every branch of boot/init, in plain sh with stub tools on PATH (no QEMU).

Each stub logs its arguments and exits with the next code of its script (the last code
repeats); on exit 0 it prints a canned record. /init runs with PHASE_INIT_TEST=1 and
its paths redirected into a temp dir, so no mount, module or network is touched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INIT = ROOT / "boot" / "init"
LIB = ROOT / "boot" / "initramfs"

STUB = r"""#!/bin/sh
name=$(basename "$0")
var=$(echo "$name" | tr 'a-z-' 'A-Z_')
n=$(cat "$SANDBOX/count.$name" 2>/dev/null || echo 0)
n=$((n + 1)); echo "$n" > "$SANDBOX/count.$name"
eval "codes=\${STUB_$var:-0}"
set -f; i=0; code=0
for c in $codes; do i=$((i + 1)); code=$c; [ "$i" -ge "$n" ] && break; done
case " ${STUB_STDIN:-} " in *" $name "*) cat > "$SANDBOX/stdin.$name.$n" ;; esac
echo "$name $* => $code" >> "$SANDBOX/calls.log"
[ -f "$SANDBOX/out/$name.$code" ] && cat "$SANDBOX/out/$name.$code"
[ -f "$SANDBOX/err/$name.$code" ] && cat "$SANDBOX/err/$name.$code" >&2
exit "$code"
"""

STUBBED = ["phase-discover", "phase-verify", "phase-fetch", "phase-kexec", "plasm-exec",
           "plasmd", "ip", "udhcpc", "insmod", "mount", "umount", "findfs", "sleep",
           "poweroff", "setsid", "cttyhack", "mdev", "sync", "chmod"]


def verified(channel: str = "stable", version: int = 7) -> dict[str, object]:
    body = {"channel": channel, "arch": "x86_64", "version": version, "cmdline": "quiet"}
    return {"v": 1, "type": "verified", "doc_type": "boot_manifest", "id": "sha256:" + "1" * 64,
            "body": body, "envelope": {"v": 1, "type": "boot_manifest", "body": body,
                                       "signatures": []}}


def errlog(tool: str, slug: str, message: str) -> str:
    return json.dumps({"v": 1, "type": "log", "level": "error", "tool": tool,
                       "event": f"{tool}.failed", "error": slug, "message": message}) + "\n"


@dataclass
class Outcome:
    code: int
    out: str
    calls: list[str]
    sandbox: Path

    def marks(self) -> list[str]:
        return [ln for ln in self.out.splitlines() if ln.startswith("PHASE-BOOT")]

    def called(self, tool: str) -> list[str]:
        return [c for c in self.calls if c.split(" ", 1)[0] == tool]

    def rescue(self) -> str | None:
        for m in self.marks():
            if m.startswith("PHASE-BOOT rescue reason="):
                return m.split("=", 1)[1]
        return None

    def stopped(self) -> str:
        return next((ln for ln in self.out.splitlines() if "STOPPED:" in ln), "")


class Sandbox:
    def __init__(self, tmp: Path) -> None:
        self.dir = tmp
        for d in ("bin", "out", "err", "etc", "run", "cache", "net/eth0", "net/lo"):
            (tmp / d).mkdir(parents=True, exist_ok=True)
        for name in STUBBED:
            p = tmp / "bin" / name
            p.write_text(STUB)
            p.chmod(0o755)
        (tmp / "etc" / "keyring.toml").write_text("# test keyring\n")
        (tmp / "etc" / "boot.conf").write_text("channel=stable\narch=x86_64\n")
        self.env: dict[str, str] = {}
        # canned successful outputs
        self.output("phase-discover", 0, json.dumps(verified()["envelope"]) + "\n")
        self.output("phase-verify", 0, json.dumps(verified()) + "\n")
        fetched = dict(verified(), out_paths={"kernel": "/run/k", "initramfs": "/run/i"})
        self.output("phase-fetch", 0, json.dumps(fetched) + "\n")
        self.output("findfs", 0, "/dev/vda2\n")
        self.output("plasm-exec", 0, "dlroW ,olleH")
        for tool, slug, msg in (("phase-verify", "bad_signature", "signature does not verify"),
                                ("phase-fetch", "digest_mismatch", "bytes hash to sha256:ff"),
                                ("phase-discover", "unavailable", "nothing answered")):
            for code in (1, 65, 69, 70, 75, 78):
                self.error(tool, code, errlog(tool, slug, msg))

    def output(self, tool: str, code: int, text: str) -> None:
        (self.dir / "out" / f"{tool}.{code}").write_text(text)

    def error(self, tool: str, code: int, text: str) -> None:
        (self.dir / "err" / f"{tool}.{code}").write_text(text)

    def codes(self, tool: str, *codes: int) -> None:
        self.env["STUB_" + tool.upper().replace("-", "_")] = " ".join(map(str, codes))

    def cache_manifest(self, channel: str = "stable") -> Path:
        p = self.dir / "cache" / "phase" / "boot" / f"{channel}-x86_64.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(verified()["envelope"]) + "\n")
        return p

    def run(self, cmdline: str) -> Outcome:
        (self.dir / "cmdline").write_text(cmdline + "\n")
        env = {
            "PATH": f"{self.dir / 'bin'}:/usr/bin:/bin", "HOME": str(self.dir),
            "SANDBOX": str(self.dir), "PHASE_INIT_TEST": "1",
            "PHASE_CMDLINE_FILE": str(self.dir / "cmdline"), "PHASE_ETC": str(self.dir / "etc"),
            "PHASE_RUN": str(self.dir / "run"), "PHASE_LIB": str(LIB),
            "PHASE_SYSNET": str(self.dir / "net"), "PHASE_CACHE_MNT": str(self.dir / "cache"),
            "PHASE_PYTHON": sys.executable, "STUB_STDIN": "phase-kexec phase-fetch",
            **self.env,
        }
        r = subprocess.run(["sh", str(INIT)], env=env, capture_output=True, text=True,
                           timeout=60, check=False)
        calls_file = self.dir / "calls.log"
        calls = calls_file.read_text().splitlines() if calls_file.exists() else []
        return Outcome(r.returncode, r.stdout + r.stderr, calls, self.dir)


@pytest.fixture
def sb(tmp_path: Path) -> Sandbox:
    if shutil.which("sh") is None:
        pytest.skip("no POSIX sh")
    return Sandbox(tmp_path)


BASE = "console=ttyS0 phase.rescue=poweroff phase.retries=3"


def test_happy_path_runs_discover_verify_fetch_kexec_in_order(sb: Sandbox) -> None:
    o = sb.run(f"{BASE} phase.mode=internet phase.provider=http://10.0.2.2:8080")
    tools = [c.split(" ", 1)[0] for c in o.calls
             if c.startswith(("phase-discover", "phase-verify", "phase-fetch", "phase-kexec"))]
    assert tools == ["phase-discover", "phase-verify", "phase-fetch", "phase-kexec"], o.calls
    disc = o.called("phase-discover")[0]
    assert "--channel=stable" in disc and "--arch=x86_64" in disc and "--via=both" in disc
    assert "--provider=http://10.0.2.2:8080" in disc
    verify = o.called("phase-verify")[0]
    assert "--type=boot_manifest" in verify and f"--state={sb.dir}/cache/phase/state.json" in verify
    kexec = o.called("phase-kexec")[0]
    assert "--mode=internet" in kexec
    # phase-kexec got exactly what phase-fetch printed
    assert json.loads((sb.dir / "stdin.phase-kexec.1").read_text())["out_paths"]
    # phase-fetch got only the selected (newest, right channel) manifest
    assert json.loads((sb.dir / "stdin.phase-fetch.1").read_text())["body"]["version"] == 7
    assert "PHASE-BOOT verify ok version=7" in o.marks()
    # the stub returned, so kexec did not happen: that is a stop, never a silent success
    assert o.rescue() == "kexec_failed" and o.code == 1
    # the manifest that was used is cached for local-mode fallback
    assert (sb.dir / "cache" / "phase" / "boot" / "stable-x86_64.json").exists()


@pytest.mark.parametrize("code,reason", [(1, "manifest_rejected"), (65, "manifest_rejected"),
                                         (78, "bad_keyring"), (66, "bad_keyring"),
                                         (74, "state_io"), (70, "verify_failed")])
def test_verify_failures_stop_before_fetch(sb: Sandbox, code: int, reason: str) -> None:
    sb.codes("phase-verify", code)
    if code in (66, 74):
        sb.error("phase-verify", code, errlog("phase-verify", "x", "y"))
    o = sb.run(f"{BASE} phase.mode=internet")
    assert o.rescue() == reason, o.out
    assert not o.called("phase-fetch") and not o.called("phase-kexec")
    assert len(o.called("phase-discover")) == 1  # a rejection is not retried
    if code == 1:
        assert "bad_signature" in o.stopped()


@pytest.mark.parametrize("code,reason", [(1, "artifact_rejected"), (65, "artifact_rejected"),
                                         (70, "fetch_failed"), (74, "fetch_failed")])
def test_fetch_failures_never_kexec(sb: Sandbox, code: int, reason: str) -> None:
    sb.codes("phase-fetch", code)
    o = sb.run(f"{BASE} phase.mode=internet")
    assert o.rescue() == reason, o.out
    assert not o.called("phase-kexec")
    if code == 1:
        assert "digest_mismatch" in o.stopped()


@pytest.mark.parametrize("code", [69, 75])
def test_unavailable_discovery_retries_then_stops(sb: Sandbox, code: int) -> None:
    sb.codes("phase-discover", code)
    o = sb.run(f"{BASE} phase.mode=internet")
    assert len(o.called("phase-discover")) == 3
    assert len(o.called("sleep")) >= 2  # backoff between attempts
    assert o.rescue() == "unavailable" and "after 3 attempts" in o.stopped()
    assert not o.called("phase-verify") and not o.called("phase-kexec")


def test_empty_discovery_counts_as_unavailable(sb: Sandbox) -> None:
    sb.output("phase-discover", 0, "")
    o = sb.run(f"{BASE} phase.mode=internet")
    assert len(o.called("phase-discover")) == 3 and not o.called("phase-verify")
    assert o.rescue() == "unavailable"


def test_temporary_discovery_failure_then_success(sb: Sandbox) -> None:
    sb.codes("phase-discover", 75, 0)
    o = sb.run(f"{BASE} phase.mode=internet")
    assert len(o.called("phase-discover")) == 2
    assert "PHASE-BOOT discover ok attempt=2" in o.marks()
    assert len(o.called("phase-kexec")) == 1


@pytest.mark.parametrize("code", [69, 75])
def test_fetch_unavailable_retries_the_whole_chain(sb: Sandbox, code: int) -> None:
    sb.codes("phase-fetch", code, 0)
    o = sb.run(f"{BASE} phase.mode=internet")
    assert len(o.called("phase-discover")) == 2 and len(o.called("phase-fetch")) == 2
    assert len(o.called("phase-kexec")) == 1


@pytest.mark.parametrize("code", [64, 65, 70, 78])
def test_broken_discover_stops_at_once(sb: Sandbox, code: int) -> None:
    sb.codes("phase-discover", code)
    o = sb.run(f"{BASE} phase.mode=internet")
    assert o.rescue() == "discover_failed" and len(o.called("phase-discover")) == 1


def test_local_mode_falls_back_to_the_verified_cache(sb: Sandbox) -> None:
    sb.codes("phase-discover", 69)
    cached = sb.cache_manifest().read_text()
    o = sb.run(f"{BASE} phase.mode=local")
    assert "--via=mdns" in o.called("phase-discover")[0]
    assert any(m.startswith("PHASE-BOOT cache fallback") for m in o.marks()), o.out
    verify = o.called("phase-verify")
    assert len(verify) == 1  # the cache is verified again, not trusted
    assert (sb.dir / "run" / "candidates.jsonl").read_text() == cached
    assert len(o.called("phase-kexec")) == 1


def test_local_mode_cache_that_fails_verification_stops(sb: Sandbox) -> None:
    sb.codes("phase-discover", 69)
    sb.codes("phase-verify", 1)
    sb.cache_manifest()
    o = sb.run(f"{BASE} phase.mode=local")
    assert o.rescue() == "manifest_rejected" and not o.called("phase-kexec")


def test_local_mode_without_cache_stops(sb: Sandbox) -> None:
    sb.codes("phase-discover", 69)
    o = sb.run(f"{BASE} phase.mode=local")
    assert o.rescue() == "unavailable" and not o.called("phase-verify")


def test_internet_mode_never_uses_the_cache(sb: Sandbox) -> None:
    sb.codes("phase-discover", 69)
    sb.cache_manifest()
    o = sb.run(f"{BASE} phase.mode=internet")
    assert o.rescue() == "unavailable" and not o.called("phase-verify")


def test_private_mode_touches_no_disk(sb: Sandbox) -> None:
    sb.codes("phase-discover", 69)
    sb.cache_manifest()
    o = sb.run(f"{BASE} phase.mode=private")
    assert not o.called("findfs") and not o.called("mount"), o.calls
    assert o.rescue() == "unavailable" and not o.called("phase-verify")
    assert "--via=mdns" in o.called("phase-discover")[0]


def test_private_mode_state_lives_in_tmpfs(sb: Sandbox) -> None:
    o = sb.run(f"{BASE} phase.mode=private phase.provider=http://p")
    verify = o.called("phase-verify")[0]
    assert f"--state={sb.dir}/run/home/state.json" in verify
    assert not (sb.dir / "cache" / "phase").exists()


def test_unknown_mode_is_refused_not_guessed(sb: Sandbox) -> None:
    o = sb.run(f"{BASE} phase.mode=turbo")
    assert o.rescue() == "bad_mode" and not o.called("phase-discover")


def test_no_network_stops_or_uses_cache_in_local_mode(sb: Sandbox) -> None:
    sb.codes("udhcpc", 1)
    o = sb.run(f"{BASE} phase.mode=internet")
    assert o.rescue() == "no_network" and not o.called("phase-discover")
    sb2 = Sandbox(sb.dir / "again")
    sb2.codes("udhcpc", 1)
    sb2.cache_manifest()
    o2 = sb2.run(f"{BASE} phase.mode=local")
    assert any(m.startswith("PHASE-BOOT cache fallback") for m in o2.marks())
    assert len(o2.called("phase-kexec")) == 1


def test_manifest_for_another_channel_is_rejected(sb: Sandbox) -> None:
    sb.output("phase-verify", 0, json.dumps(verified(channel="beta")) + "\n")
    o = sb.run(f"{BASE} phase.mode=internet")
    assert o.rescue() == "manifest_rejected" and not o.called("phase-fetch")


def test_provider_records_are_not_given_to_phase_verify(sb: Sandbox) -> None:
    manifest = json.dumps({"v": 1, "type": "boot", "envelope": verified()["envelope"]})
    sb.output("phase-discover", 0, manifest + "\n"
              + '{"v": 1, "type": "boot_provider", "url": "http://p"}\n')
    o = sb.run(f"{BASE} phase.mode=internet")
    assert (sb.dir / "run" / "candidates.jsonl").read_text() == manifest + "\n"
    assert len(o.called("phase-kexec")) == 1


def test_newest_verified_manifest_wins_when_some_are_rejected(sb: Sandbox) -> None:
    sb.codes("phase-verify", 1)  # --keep-going: one rejected ...
    recs = [verified(version=5), verified(version=9), verified(channel="beta", version=99)]
    sb.output("phase-verify", 1, "".join(json.dumps(r) + "\n" for r in recs))
    o = sb.run(f"{BASE} phase.mode=internet")
    assert "PHASE-BOOT verify ok version=9" in o.marks(), o.out
    assert json.loads((sb.dir / "stdin.phase-fetch.1").read_text())["body"]["version"] == 9


def test_kexec_refusal_is_a_stop(sb: Sandbox) -> None:
    sb.codes("phase-kexec", 1)
    o = sb.run(f"{BASE} phase.mode=internet")
    assert o.rescue() == "kexec_rejected"


def test_cache_partition_is_unmounted_before_kexec(sb: Sandbox) -> None:
    o = sb.run(f"{BASE} phase.mode=local")
    umounts = [i for i, c in enumerate(o.calls) if c.startswith("umount")]
    kexec = [i for i, c in enumerate(o.calls) if c.startswith("phase-kexec")]
    assert umounts and kexec and umounts[0] < kexec[0]


def test_rescue_shell_is_the_default_stop(sb: Sandbox) -> None:
    sb.codes("phase-verify", 1)
    o = sb.run("console=ttyS0 phase.mode=internet")
    assert o.rescue() == "manifest_rejected"
    # under test the shell is not spawned, but the default must not be poweroff
    assert "phase.rescue" not in (sb.dir / "cmdline").read_text()


@pytest.mark.parametrize("mode", ["private", "local"])
def test_node_stage_runs_and_verifies_the_hello_job(sb: Sandbox, mode: str) -> None:
    sb.output("plasm-exec", 0, "dlroW ,olleH")
    sb.output("phase-verify", 0, '{"v":1,"type":"verified","doc_type":"receipt"}\n')
    o = sb.run(f"console=ttyS0 phase.stage=node phase.halt=1 phase.mode={mode}")
    assert "PHASE-BOOT hello stdout=dlroW ,olleH" in o.marks()
    assert any(m.startswith("PHASE-BOOT receipt verified") for m in o.marks())
    run = next(c for c in o.called("plasm-exec") if c.startswith("plasm-exec run"))
    if mode == "private":
        assert f"--receipt={sb.dir}/run/receipts/" in run and not o.called("mount")
    else:
        assert f"--receipt={sb.dir}/cache/phase/receipts/" in run
    assert not o.called("phase-discover") and o.code == 0
    # the plasmd hook: init the home (if missing), then start the daemon in this mode;
    # this stub daemon never says node_started, so the job falls back to plasm-exec and
    # the console says so
    plasmd = o.called("plasmd")
    assert plasmd[0].startswith("plasmd init -q --if-missing") and f"--mode={mode}" in plasmd[0]
    assert plasmd[1].startswith("plasmd start") and f"--mode={mode}" in plasmd[1]
    assert "PHASE-BOOT hello via=plasm-exec" in o.marks()


def test_node_stage_reports_plasmd_that_cannot_start(sb: Sandbox) -> None:
    sb.codes("plasmd", 0, 78)
    sb.error("plasmd", 78, errlog("plasmd", "bad_config", "unknown key"))
    real_sleep = sb.dir / "bin" / "sleep"  # give the failing daemon time to exit
    real_sleep.write_text("#!/bin/sh\nexec /bin/sleep 0.5\n")
    o = sb.run("console=ttyS0 phase.stage=node phase.halt=1 phase.mode=private")
    assert any(m.startswith("PHASE-BOOT plasmd exited code=78") and "bad_config" in m
               for m in o.marks()), o.out
    assert any(m.startswith("PHASE-BOOT receipt verified") for m in o.marks())


def test_discover_reason_names_what_it_dropped(sb: Sandbox) -> None:
    sb.codes("phase-discover", 69)
    sb.error("phase-discover", 69,
             errlog("phase-discover", "bad_signature", "manifest from http://p dropped")
             + errlog("phase-discover", "unavailable", "nothing found in 10 s"))
    o = sb.run(f"{BASE} phase.mode=internet")
    assert "unavailable: nothing found in 10 s" in o.stopped()
    assert "bad_signature: manifest from http://p dropped" in o.stopped()


def test_node_stage_reports_a_receipt_that_does_not_verify(sb: Sandbox) -> None:
    sb.codes("phase-verify", 1)
    o = sb.run("console=ttyS0 phase.stage=node phase.halt=1 phase.mode=private")
    assert any(m.startswith("PHASE-BOOT receipt rejected") for m in o.marks())


def test_init_is_posix_sh_and_shellcheck_clean() -> None:
    if shutil.which("shellcheck") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("shellcheck is not installed (.ci/apt-packages.txt)")
        pytest.skip("shellcheck is not installed")
    files = [INIT, *(ROOT / "boot").glob("lib/*.sh"), LIB / "udhcpc.script",
             *(ROOT / "boot" / p for p in ("build", "test", "write-usb", "release"))]
    files = [f for f in files if f.exists()]
    r = subprocess.run(["shellcheck", "-x", "-s", "sh", *map(str, files)], cwd=ROOT / "boot",
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
