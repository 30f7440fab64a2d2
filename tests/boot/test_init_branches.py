"""Test 8: every branch of boot/init, in plain sh with stub tools on PATH (no QEMU).

Each stub logs its arguments and exits with the next code of its script (the last code
repeats); it prints the canned output and log for that code, and (phase-boot) copies a
canned summary line to its --summary file. `phase-boot exec` is a stub of its own
(phase-boot-exec). /init runs with PHASE_INIT_TEST=1 and its paths redirected into a
temp dir, so no mount, module or network is touched. The last tests run the real
phase-boot (in --dry-run) behind stubs that print records made from the test vectors.
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
[ "${1:-}" = exec ] && name="$name-exec"
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
for a in "$@"; do
    case "$a" in
        --summary=*) [ -f "$SANDBOX/summary/$name.$code" ] \
            && cp "$SANDBOX/summary/$name.$code" "${a#--summary=}" ;;
    esac
done
exit "$code"
"""

STUBBED = ["phase-discover", "phase-verify", "phase-fetch", "phase-boot", "plasm-exec",
           "plasmd", "phase-key", "ip", "udhcpc", "insmod", "mount", "umount", "findfs",
           "sleep", "poweroff", "setsid", "cttyhack", "mdev", "sync", "chmod"]
CHAIN = ["phase-discover", "phase-verify", "phase-fetch", "phase-boot"]


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
        for d in ("bin", "out", "err", "summary", "etc", "run", "cache", "net/eth0", "net/lo"):
            (tmp / d).mkdir(parents=True, exist_ok=True)
        for name in STUBBED:
            p = tmp / "bin" / name
            p.write_text(STUB)
            p.chmod(0o755)
        (tmp / "etc" / "keyring.toml").write_text("# test keyring\n")
        (tmp / "etc" / "boot.conf").write_text("channel=stable\narch=x86_64\n")
        self.env: dict[str, str] = {}
        # canned successful outputs
        self.output("phase-discover", 0, json.dumps({"v": 1, "type": "boot",
                                                     "envelope": verified()["envelope"]}) + "\n")
        self.output("phase-verify", 0, json.dumps(verified()) + "\n")
        self.output("phase-fetch", 0, json.dumps(verified()) + "\n")
        self.output("findfs", 0, "/dev/vda2\n")
        self.output("plasm-exec", 0, "dlroW ,olleH")
        self.summary(0, "version=7 id=sha256:11 channel=stable arch=x86_64 cmdline=quiet")
        for code, line in ((1, "rollback: stable/x86_64 version 5 is older than 7"),
                           (65, "malformed: line 1: invalid JSON"),
                           (66, "missing_input: no records in the input [before that: "
                                "unavailable: nothing found in 10 s]"),
                           (69, "not_found: http://p/sha256/11: 404 Not Found"),
                           (70, "internal: a bug"), (74, "kexec_failed: errno 12"),
                           (75, "timeout: http://p/sha256/11: timed out"),
                           (78, "bad_config: keyring: unknown section")):
            self.summary(code, line)

    def summary(self, code: int, line: str) -> None:
        (self.dir / "summary" / f"phase-boot.{code}").write_text(line + "\n")

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

    @property
    def sysetc(self) -> Path:
        """Where the sandbox's /etc/nsswitch.conf and /etc/resolv.conf go."""
        d = self.dir / "sysetc"
        d.mkdir(exist_ok=True)
        return d

    def run(self, cmdline: str) -> Outcome:
        (self.dir / "cmdline").write_text(cmdline + "\n")
        env = {
            "PATH": f"{self.dir / 'bin'}:/usr/bin:/bin", "HOME": str(self.dir),
            "SANDBOX": str(self.dir), "PHASE_INIT_TEST": "1",
            "PHASE_CMDLINE_FILE": str(self.dir / "cmdline"), "PHASE_ETC": str(self.dir / "etc"),
            "PHASE_RUN": str(self.dir / "run"), "PHASE_LIB": str(LIB),
            "PHASE_SYSNET": str(self.dir / "net"), "PHASE_CACHE_MNT": str(self.dir / "cache"),
            "PHASE_SYSETC": str(self.sysetc),
            "STUB_STDIN": "phase-verify phase-fetch phase-boot",
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


def test_happy_path_is_one_pipeline_then_exec(sb: Sandbox) -> None:
    o = sb.run(f"{BASE} phase.mode=internet phase.provider=http://10.0.2.2:8080")
    for tool in CHAIN:
        assert len(o.called(tool)) == 1, (tool, o.calls)
    disc = o.called("phase-discover")[0]
    assert "--channel=stable" in disc and "--arch=x86_64" in disc and "--via=both" in disc
    assert "--provider=http://10.0.2.2:8080" in disc
    verify = o.called("phase-verify")[0]
    state = f"--state={sb.dir}/cache/phase/state.json"
    assert "--type=boot_manifest" in verify and "--keep-going" in verify and state in verify
    fetch = o.called("phase-fetch")[0]
    assert f"--out-dir={sb.dir}/run/boot" in fetch and "--mirror" not in fetch
    boot = o.called("phase-boot")[0]
    for arg in ("--load-only", "--channel=stable", "--arch=x86_64", "--mode=internet",
                state, f"--keep={sb.dir}/cache/phase/boot/stable-x86_64.json",
                f"--summary={sb.dir}/run/summary.txt", f"--log={sb.dir}/run/verify.err"):
        assert arg in boot.split(), (arg, boot)
    # each stage reads what the one before it printed (phase-discover's through a file)
    assert "PHASE-BOOT discover ok attempt=1" in o.marks()
    assert (sb.dir / "stdin.phase-verify.1").read_text() == (sb.dir / "out/phase-discover.0"
                                                             ).read_text()
    assert (sb.dir / "stdin.phase-fetch.1").read_text() == (sb.dir / "out/phase-verify.0"
                                                            ).read_text()
    assert (sb.dir / "stdin.phase-boot.1").read_text() == (sb.dir / "out/phase-fetch.0"
                                                           ).read_text()
    assert "PHASE-BOOT loaded version=7 id=sha256:11 channel=stable arch=x86_64 cmdline=quiet" \
        in o.marks()
    assert "PHASE-BOOT kexec discovered" in o.marks()
    # the exec stub returned, so kexec did not happen: that is a stop, never a silent success
    assert len(o.called("phase-boot-exec")) == 1
    assert o.rescue() == "kexec_failed" and o.code == 1


@pytest.mark.parametrize("code,reason", [(1, "rejected"), (65, "rejected"),
                                         (78, "bad_keyring"), (74, "io_error"),
                                         (70, "chain_failed")])
def test_a_failed_chain_stops_and_says_why(sb: Sandbox, code: int, reason: str) -> None:
    sb.codes("phase-boot", code)
    o = sb.run(f"{BASE} phase.mode=internet")
    assert o.rescue() == reason, o.out
    assert not o.called("phase-boot-exec")
    assert len(o.called("phase-discover")) == 1  # a rejection is not retried
    summary = (sb.dir / "summary" / f"phase-boot.{code}").read_text().strip()
    assert summary in o.stopped()


@pytest.mark.parametrize("code", [66, 69, 75])
def test_nothing_usable_retries_then_stops(sb: Sandbox, code: int) -> None:
    sb.codes("phase-boot", code)
    o = sb.run(f"{BASE} phase.mode=internet")
    assert len(o.called("phase-discover")) == 3 and len(o.called("phase-boot")) == 3
    assert len(o.called("sleep")) >= 2  # backoff between attempts
    assert o.rescue() == "unavailable" and "after 3 attempts" in o.stopped()
    summary = (sb.dir / "summary" / f"phase-boot.{code}").read_text().strip()
    assert summary in o.stopped()
    assert not o.called("phase-boot-exec")


@pytest.mark.parametrize("code", [69, 75])
def test_discovery_that_finds_nothing_retries_then_stops(sb: Sandbox, code: int) -> None:
    sb.codes("phase-discover", code)
    sb.codes("phase-boot", 66)  # asked only to explain: it gets no input
    o = sb.run(f"{BASE} phase.mode=internet")
    assert len(o.called("phase-discover")) == 3 and not o.called("phase-verify")
    assert len(o.called("sleep")) >= 2
    assert all((sb.dir / f"stdin.phase-boot.{n}").read_text() == "" for n in (1, 2, 3))
    assert o.rescue() == "unavailable" and "after 3 attempts" in o.stopped()
    # why, from phase-discover's log, through phase-boot's summary
    assert "unavailable: nothing found in 10 s" in o.stopped()
    assert f"--log={sb.dir}/run/discover.err" in o.called("phase-boot")[0].split()
    assert not o.called("phase-boot-exec")


@pytest.mark.parametrize("code", [64, 65, 70, 78])
def test_broken_discover_stops_at_once(sb: Sandbox, code: int) -> None:
    sb.codes("phase-discover", code)
    sb.codes("phase-boot", 66)
    o = sb.run(f"{BASE} phase.mode=internet")
    assert o.rescue() == "discover_failed" and len(o.called("phase-discover")) == 1
    assert f"(exit {code})" in o.stopped() and not o.called("phase-verify")


def test_temporary_failure_then_success(sb: Sandbox) -> None:
    sb.codes("phase-discover", 75, 0)
    sb.codes("phase-boot", 66, 0)
    o = sb.run(f"{BASE} phase.mode=internet")
    assert len(o.called("phase-discover")) == 2
    assert "PHASE-BOOT discover ok attempt=2" in o.marks()
    assert len(o.called("phase-boot-exec")) == 1


def test_empty_discovery_counts_as_nothing_usable(sb: Sandbox) -> None:
    sb.output("phase-discover", 0, "")
    sb.codes("phase-boot", 66)
    o = sb.run(f"{BASE} phase.mode=internet")
    assert len(o.called("phase-discover")) == 3 and o.rescue() == "unavailable"


def test_local_mode_falls_back_to_the_verified_cache(sb: Sandbox) -> None:
    sb.codes("phase-boot", 69, 69, 69, 0)
    cached = sb.cache_manifest().read_text()
    o = sb.run(f"{BASE} phase.mode=local")
    assert "--via=mdns" in o.called("phase-discover")[0]
    assert any(m.startswith("PHASE-BOOT cache fallback") for m in o.marks()), o.out
    assert len(o.called("phase-discover")) == 3
    assert len(o.called("phase-verify")) == 4  # the cache is verified again, not trusted
    assert (sb.dir / "stdin.phase-verify.4").read_text() == cached
    assert "--keep=" in o.called("phase-boot")[3]  # loading it keeps it again
    assert "PHASE-BOOT kexec cached" in o.marks()
    assert len(o.called("phase-boot-exec")) == 1


def test_local_mode_cache_that_fails_verification_stops(sb: Sandbox) -> None:
    sb.codes("phase-boot", 69, 69, 69, 1)
    sb.cache_manifest()
    o = sb.run(f"{BASE} phase.mode=local")
    assert o.rescue() == "rejected" and "cached boot manifest" in o.stopped()
    assert not o.called("phase-boot-exec")


def test_local_mode_cache_that_cannot_be_fetched_stops(sb: Sandbox) -> None:
    sb.codes("phase-boot", 69)
    sb.cache_manifest()
    o = sb.run(f"{BASE} phase.mode=local")
    assert o.rescue() == "cache_unusable" and len(o.called("phase-boot")) == 4


def test_local_mode_without_cache_stops(sb: Sandbox) -> None:
    sb.codes("phase-boot", 69)
    o = sb.run(f"{BASE} phase.mode=local")
    assert o.rescue() == "unavailable" and len(o.called("phase-verify")) == 3


def test_internet_mode_never_uses_the_cache(sb: Sandbox) -> None:
    sb.codes("phase-boot", 69)
    sb.cache_manifest()
    o = sb.run(f"{BASE} phase.mode=internet")
    assert o.rescue() == "unavailable" and len(o.called("phase-verify")) == 3


def test_private_mode_touches_no_disk(sb: Sandbox) -> None:
    sb.codes("phase-boot", 69)
    sb.cache_manifest()
    o = sb.run(f"{BASE} phase.mode=private")
    assert not o.called("findfs") and not o.called("mount"), o.calls
    assert o.rescue() == "unavailable" and len(o.called("phase-verify")) == 3
    assert "--via=mdns" in o.called("phase-discover")[0]
    assert "--keep=" not in o.called("phase-boot")[0]  # nothing to remember


def test_private_mode_state_lives_in_tmpfs(sb: Sandbox) -> None:
    o = sb.run(f"{BASE} phase.mode=private phase.provider=http://p")
    assert f"--state={sb.dir}/run/home/state.json" in o.called("phase-verify")[0]
    assert f"--state={sb.dir}/run/home/state.json" in o.called("phase-boot")[0]
    assert not (sb.dir / "cache" / "phase").exists()


def test_unknown_mode_is_refused_not_guessed(sb: Sandbox) -> None:
    o = sb.run(f"{BASE} phase.mode=turbo")
    assert o.rescue() == "bad_mode" and not o.called("phase-discover")


def test_missing_keyring_stops_before_the_chain(sb: Sandbox) -> None:
    (sb.dir / "etc" / "keyring.toml").unlink()
    o = sb.run(f"{BASE} phase.mode=internet")
    assert o.rescue() == "bad_keyring" and not o.called("phase-discover")


def test_no_network_stops_or_uses_cache_in_local_mode(sb: Sandbox) -> None:
    sb.codes("udhcpc", 1)
    o = sb.run(f"{BASE} phase.mode=internet")
    assert o.rescue() == "no_network" and not o.called("phase-discover")
    sb2 = Sandbox(sb.dir / "again")
    sb2.codes("udhcpc", 1)
    sb2.cache_manifest()
    o2 = sb2.run(f"{BASE} phase.mode=local")
    assert any(m.startswith("PHASE-BOOT cache fallback") for m in o2.marks())
    assert not o2.called("phase-discover") and len(o2.called("phase-boot-exec")) == 1


def test_cache_partition_is_unmounted_before_exec(sb: Sandbox) -> None:
    o = sb.run(f"{BASE} phase.mode=local")
    umounts = [i for i, c in enumerate(o.calls) if c.startswith("umount")]
    execs = [i for i, c in enumerate(o.calls) if c.startswith("phase-boot-exec")]
    assert umounts and execs and umounts[0] < execs[0]


def test_rescue_shell_is_the_default_stop(sb: Sandbox) -> None:
    sb.codes("phase-boot", 1)
    o = sb.run("console=ttyS0 phase.mode=internet")
    assert o.rescue() == "rejected"
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
        home = f"{sb.dir}/run/home"
    else:
        assert f"--receipt={sb.dir}/cache/phase/receipts/" in run
        home = f"{sb.dir}/cache/phase"
    assert not o.called("phase-discover") and o.code == 0
    # the plasmd hook: init the home (if missing), then start the daemon in this mode;
    # this stub daemon never says node_started, so the job falls back to plasm-exec and
    # the console says so
    plasmd = o.called("plasmd")
    assert plasmd[0].startswith("plasmd init -q --if-missing") and f"--mode={mode}" in plasmd[0]
    assert plasmd[1].startswith("plasmd start") and f"--mode={mode}" in plasmd[1]
    assert "--listen=127.0.0.1:4433" in plasmd[1]
    assert "PHASE-BOOT hello via=plasm-exec" in o.marks()
    # keys come from the key file, never from parsing a JSON line
    trusts = [c for c in o.called("phase-key") if c.startswith("phase-key trust")]
    assert len(trusts) == 2 and all(f"--key={home}/key" in t for t in trusts), trusts


def test_node_stage_submits_to_a_running_plasmd(sb: Sandbox) -> None:
    sb.output("plasmd", 0, '{"v":1,"type":"node_started"}\n')
    # a daemon that stays up: `plasmd start` sleeps (the init kills nothing in test mode)
    (sb.dir / "bin" / "plasmd").write_text(
        '#!/bin/sh\necho "plasmd $*" >> "$SANDBOX/calls.log"\n'
        'case "$1" in start) echo \'{"v":1}\'; exec /bin/sleep 5 ;; '
        'submit) printf "dlroW ,olleH" ;; esac\n')
    sb.output("phase-verify", 0, '{"v":1,"type":"verified","doc_type":"receipt"}\n')
    o = sb.run("console=ttyS0 phase.stage=node phase.halt=1 phase.mode=local")
    submit = next(c for c in o.called("plasmd") if c.startswith("plasmd submit"))
    assert "--peer=127.0.0.1:4433" in submit
    assert "PHASE-BOOT hello via=plasmd" in o.marks()
    assert any(m.startswith("PHASE-BOOT receipt verified") for m in o.marks())


def test_node_stage_reports_plasmd_that_cannot_start(sb: Sandbox) -> None:
    sb.codes("plasmd", 0, 78)
    real_sleep = sb.dir / "bin" / "sleep"  # give the failing daemon time to exit
    real_sleep.write_text("#!/bin/sh\nexec /bin/sleep 0.5\n")
    o = sb.run("console=ttyS0 phase.stage=node phase.halt=1 phase.mode=private")
    assert any(m.startswith("PHASE-BOOT plasmd exited code=78 log=") for m in o.marks()), o.out
    assert any(m.startswith("PHASE-BOOT receipt verified") for m in o.marks())


def test_node_stage_reports_a_receipt_that_does_not_verify(sb: Sandbox) -> None:
    sb.codes("phase-verify", 1)
    o = sb.run("console=ttyS0 phase.stage=node phase.halt=1 phase.mode=private")
    assert any(m.startswith("PHASE-BOOT receipt rejected") for m in o.marks())


def test_init_parses_no_json() -> None:
    """sed/grep/awk may read the kernel cmdline, boot.conf and the environment, nothing else."""
    allowed = ("$CMDLINE_FILE", "boot.conf", "env |")
    for n, line in enumerate(INIT.read_text().splitlines(), 1):
        code = line.split("#", 1)[0]
        if any(f"{tool} " in code for tool in ("sed", "grep", "awk", "jq", "python")):
            assert any(a in code for a in allowed), f"boot/init:{n}: {line.strip()}"


# -- with the real phase-boot (dry run) behind stub upstream stages ----------------------
VECTORS = ROOT / "tests" / "vectors"


def real_boot(sb: Sandbox, *, kernel: bytes = b"kernel", upstream: list[dict[str, object]]
              | None = None) -> None:
    """Stage stubs print vector records; phase-boot is the real tool with --dry-run."""
    shutil.copy(VECTORS / "keyring.toml", sb.dir / "etc" / "keyring.toml")
    env = json.loads((VECTORS / "valid" / "boot_manifest.json").read_text())
    files = sb.dir / "files"
    files.mkdir()
    (files / "kernel").write_bytes(kernel)
    (files / "initramfs").write_bytes(b"initramfs")
    recs: list[dict[str, object]] = list(upstream or [])
    for name in ("kernel", "initramfs"):
        art = env["body"][name]
        recs.append({"v": 1, "type": "blob", "id": art["id"], "size_bytes": art["size"],
                     "name": name, "path": str(files / name)})
    recs.append({"v": 1, "type": "verified", "doc_type": "boot_manifest",
                 "body": env["body"], "envelope": env})
    sb.output("phase-fetch", 0, "".join(json.dumps(r) + "\n" for r in recs))
    real = Path(sys.executable).parent / "phase-boot"
    (sb.dir / "bin" / "phase-boot").write_text(
        "#!/bin/sh\n"
        'if [ "$1" = exec ]; then echo "phase-boot-exec" >> "$SANDBOX/calls.log"; exit 0; fi\n'
        'echo "phase-boot $*" >> "$SANDBOX/calls.log"\n'
        'for a in "$@"; do shift; [ "$a" = --load-only ] && a=--dry-run; set -- "$@" "$a"; done\n'
        f'exec "{real}" "$@"\n')


def test_real_phase_boot_loads_and_keeps_the_manifest(sb: Sandbox) -> None:
    real_boot(sb)
    o = sb.run(f"{BASE} phase.mode=local")
    loaded = [m for m in o.marks() if m.startswith("PHASE-BOOT loaded ")]
    assert loaded and loaded[0].startswith("PHASE-BOOT loaded version=7 id=sha256:"), o.out
    assert "cmdline=console=ttyS0 phase.mode=local phase.channel=stable" in loaded[0]
    kept = sb.dir / "cache" / "phase" / "boot" / "stable-x86_64.json"
    assert json.loads(kept.read_text())["body"]["version"] == 7
    assert o.rescue() == "kexec_failed"  # the exec stub returned


def test_real_phase_boot_stops_on_a_tampered_kernel(sb: Sandbox) -> None:
    real_boot(sb, kernel=b"kernek")
    o = sb.run(f"{BASE} phase.mode=internet")
    assert o.rescue() == "rejected" and "digest_mismatch: the kernel at" in o.stopped(), o.out
    assert not o.called("phase-boot-exec")


def test_real_phase_boot_stops_on_an_upstream_rejection(sb: Sandbox) -> None:
    real_boot(sb)
    err = {"v": 1, "type": "error", "error": "rollback", "exit_code": 1,
           "message": "boot/stable/x86_64 version 5 is older than version 7"}
    sb.output("phase-fetch", 0, json.dumps(err) + "\n")
    o = sb.run(f"{BASE} phase.mode=internet")
    assert o.rescue() == "rejected" and "rollback: boot/stable/x86_64 version 5" in o.stopped()
    assert len(o.called("phase-discover")) == 1


def test_init_is_posix_sh_and_shellcheck_clean() -> None:
    if shutil.which("shellcheck") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("shellcheck is not installed (.ci/apt-packages.txt)")
        pytest.skip("shellcheck is not installed")
    files = [INIT, *(ROOT / "boot").glob("lib/*.sh"), LIB / "udhcpc.script", LIB / "proxy.sh",
             *(ROOT / "boot" / p for p in ("build", "test", "write-usb", "release"))]
    files = [f for f in files if f.exists()]
    r = subprocess.run(["shellcheck", "-x", "-s", "sh", *map(str, files)], cwd=ROOT / "boot",
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
