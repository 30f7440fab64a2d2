"""Phase Boot helpers for /init: pick a verified manifest, explain a failure, kexec.

Usage (from /init; stdin/stdout are JSON lines):
  phase_boot.py select --channel=C --arch=A        verified records in → the newest
                                                   boot manifest for (C, A) out
  phase_boot.py reason FILE                        the last error slug and message of a
                                                   tool's JSON log (stderr) file
  phase_boot.py kexec --keys=K --home=H --mode=M [--now=T] [--dry-run]
                                                   phase-fetch output in → re-verify the
                                                   manifest, re-hash kernel and initramfs,
                                                   kexec_file_load + reboot(KEXEC)

Exit status: 0 ok; 1 rejected (nothing suitable, a hash or signature that does not
match); 64 usage; 65 malformed input; 70 the kexec syscalls failed.

Nothing is kexec'd unless the manifest verifies again here against the image's
keyring and the rollback marks, and both files hash to the ids and sizes it signs.
The kexec command line is the signed cmdline plus only the local boot choices
(phase.mode, phase.channel), which the person at the machine picked anyway.
"""

from __future__ import annotations

import ctypes
import gzip
import hashlib
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

# kexec_file_load(2) syscall numbers; reboot(2) command for kexec.
SYS_KEXEC_FILE_LOAD = {"x86_64": 320, "aarch64": 294}
LINUX_REBOOT_CMD_KEXEC = 0x45584543
KEXEC_FILE_NO_INITRAMFS = 0x4
LOCAL_KEYS = ("phase.mode", "phase.channel")


def _records(stream: Any) -> list[dict[str, Any]]:
    out = []
    for line in stream:
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def _opts(argv: list[str]) -> dict[str, str]:
    opts = {}
    for a in argv:
        if not a.startswith("--"):
            raise SystemExit(64)
        k, _, v = a[2:].partition("=")
        opts[k] = v
    return opts


def select(argv: list[str]) -> int:
    o = _opts(argv)
    best: dict[str, Any] | None = None
    for rec in _records(sys.stdin):
        if rec.get("type") != "verified" or rec.get("doc_type") != "boot_manifest":
            continue
        body = rec.get("body") or {}
        if body.get("channel") != o.get("channel") or body.get("arch") != o.get("arch"):
            print(f"phase-boot: ignoring a manifest for {body.get('channel')}/"
                  f"{body.get('arch')}", file=sys.stderr)
            continue
        if best is None or int(body.get("version", 0)) > int(best["body"]["version"]):
            best = rec
    if best is None:
        print(f"phase-boot: no verified manifest for {o.get('channel')}/{o.get('arch')}",
              file=sys.stderr)
        return 1
    sys.stdout.write(json.dumps(best, ensure_ascii=True, separators=(",", ":")) + "\n")
    return 0


def reason(argv: list[str]) -> int:
    """The last error of a tool's JSON log, plus the distinct errors before it.

    phase-discover drops a manifest that fails its checks and then says only "nothing
    found": the earlier lines are what tell the person at the console why.
    """
    errors: list[tuple[str, str]] = []
    try:
        lines = Path(argv[0]).read_text(errors="replace").splitlines()
    except (OSError, IndexError):
        lines = []
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and rec.get("error"):
            item = (str(rec["error"])[:64], str(rec.get("message", ""))[:200])
            if item not in errors:
                errors.append(item)
    if not errors:
        text = "unknown (the tool logged no error)"
    else:
        slug, msg = errors[-1]
        text = f"{slug}: {msg}".rstrip(": ")
        earlier = "; ".join(f"{s}: {m}".rstrip(": ") for s, m in errors[:-1][-3:])
        if earlier:
            text += f" [before that: {earlier}]"
    print("".join(c if c.isprintable() else "?" for c in text))
    return 0


def _sha256_file(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            n += len(chunk)
    return "sha256:" + h.hexdigest(), n


def kexec(argv: list[str]) -> int:
    o = _opts(argv)
    from phase_core import timefmt
    from phase_core.documents import Policy, verify
    from phase_core.errors import PhaseError
    from phase_core.state import StateStore
    from phase_core.trust import Keyring

    chosen = None
    for rec in _records(sys.stdin):
        if rec.get("type") == "verified" and rec.get("doc_type") == "boot_manifest" \
                and rec.get("out_paths"):
            chosen = rec
    if chosen is None:
        print("phase-boot: no fetched boot manifest on stdin", file=sys.stderr)
        return 1
    home = Path(o["home"])
    try:
        policy = Policy(keyring=Keyring.load(Path(o["keys"])),
                        now=timefmt.parse_time(o["now"]) if o.get("now") else timefmt.now(),
                        expected_type="boot_manifest",
                        marks=StateStore(home / "state.json").marks())
        doc = verify(chosen["envelope"], policy)
    except PhaseError as e:
        print(f"phase-boot: manifest rejected at kexec: {e.slug}: {e}", file=sys.stderr)
        return 1
    body = doc.body
    files = {}
    for name in ("kernel", "initramfs"):
        path = Path(chosen["out_paths"][name])
        got, size = _sha256_file(path)
        if got != body[name]["id"] or size != body[name]["size"]:
            print(f"phase-boot: {name} at {path} hashes to {got} ({size} bytes), the "
                  f"manifest signs {body[name]['id']} ({body[name]['size']} bytes)",
                  file=sys.stderr)
            return 1
        files[name] = path
    extra = [f"phase.mode={o['mode']}", f"phase.channel={body['channel']}"]
    words = [w for w in body["cmdline"].split() if w.split("=", 1)[0] not in LOCAL_KEYS]
    cmdline = " ".join(words + extra)
    print(f"PHASE-BOOT kexec version={body['version']} id={doc.id} cmdline={cmdline}",
          flush=True)
    if "dry-run" in o:
        return 0
    return _kexec_file_load(files["kernel"], files["initramfs"], cmdline)


def _kernel_fd(path: Path, arch: str) -> int:
    """arm64's kexec_file_load takes an uncompressed Image: gunzip a vmlinuz first."""
    if arch == "aarch64":
        with open(path, "rb") as f:
            head = f.read(2)
        if head == b"\x1f\x8b":
            out = path.with_suffix(".Image")
            with gzip.open(path, "rb") as src, open(out, "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
            path = out
    return os.open(path, os.O_RDONLY | os.O_CLOEXEC)


def _kexec_file_load(kernel: Path, initrd: Path, cmdline: str) -> int:
    arch = platform.machine()
    nr = SYS_KEXEC_FILE_LOAD.get(arch)
    if nr is None:
        print(f"phase-boot: no kexec_file_load syscall number for {arch}", file=sys.stderr)
        return 70
    libc = ctypes.CDLL(None, use_errno=True)
    kfd = _kernel_fd(kernel, arch)
    ifd = os.open(initrd, os.O_RDONLY | os.O_CLOEXEC)
    cmd = cmdline.encode() + b"\0"
    libc.syscall.restype = ctypes.c_long
    rc = libc.syscall(ctypes.c_long(nr), ctypes.c_int(kfd), ctypes.c_int(ifd),
                      ctypes.c_ulong(len(cmd)), ctypes.c_char_p(cmd), ctypes.c_ulong(0))
    if rc != 0:
        err = ctypes.get_errno()
        print(f"phase-boot: kexec_file_load failed: {os.strerror(err)} (errno {err}); "
              "is kexec disabled (kexec_load_disabled) or the kernel unsigned under "
              "lockdown?", file=sys.stderr)
        return 70
    os.sync()
    libc.reboot(ctypes.c_int(LINUX_REBOOT_CMD_KEXEC))
    err = ctypes.get_errno()
    print(f"phase-boot: reboot(KEXEC) returned: {os.strerror(err)}", file=sys.stderr)
    return 70


def main(argv: list[str]) -> int:
    cmds = {"select": select, "reason": reason, "kexec": kexec}
    if not argv or argv[0] not in cmds:
        print(__doc__, file=sys.stderr)
        return 64
    try:
        return cmds[argv[0]](argv[1:])
    except (KeyError, ValueError, TypeError) as e:
        print(f"phase-boot: malformed input: {type(e).__name__}: {e}", file=sys.stderr)
        return 65


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
