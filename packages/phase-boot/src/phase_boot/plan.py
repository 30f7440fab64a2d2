"""What to kexec: the newest manifest that verifies again, and its files, hashed again.

Pure decisions plus file reads: the keyring, the clock and the rollback marks
are passed in. Each file is opened once; the descriptor that was hashed is the
one handed to kexec_file_load, so the bytes checked are the bytes loaded even
if someone replaces the file at that path meanwhile.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from phase_boot.records import Candidate
from phase_core.documents import Policy, Verified, verify
from phase_core.errors import DigestMismatch, IOFailure, MissingInput, PhaseError, Rejected

CHUNK = 1 << 20
# The local choices: a signed cmdline's words for these keys are dropped, and the
# person at the machine's (--mode, the manifest's channel, private mode's proxy) appended.
LOCAL_KEYS = ("phase.mode", "phase.channel", "phase.proxy", "phase.tor")


@dataclass
class File:
    name: str
    id: str
    size: int
    path: str
    fd: int


@dataclass
class Plan:
    doc: Verified
    kernel: File
    initramfs: File
    cmdline: str

    def record(self, *, dry_run: bool, loaded: bool) -> dict[str, Any]:
        body = self.doc.body
        return {"v": 1, "type": "kexec", "dry_run": dry_run, "loaded": loaded,
                "id": self.doc.id, "channel": body["channel"], "arch": body["arch"],
                "version": body["version"], "signers": [t.name for t in self.doc.signers],
                "kernel": _file_rec(self.kernel), "initramfs": _file_rec(self.initramfs),
                "cmdline": self.cmdline}

    def summary(self) -> str:
        body = self.doc.body
        return (f"version={body['version']} id={self.doc.id} channel={body['channel']} "
                f"arch={body['arch']} cmdline={self.cmdline}")

    def close(self) -> None:
        for fd in (self.kernel.fd, self.initramfs.fd):
            try:
                os.close(fd)
            except OSError:
                pass


def _file_rec(f: File) -> dict[str, Any]:
    return {"id": f.id, "size_bytes": f.size, "path": f.path}


def verified(cands: list[Candidate], policy: Policy, channel: str | None, arch: str,
             problem: Callable[[PhaseError], None]) -> list[Verified]:
    """The candidates that verify again and are for (channel, arch), newest first."""
    ok = []
    for c in cands:
        try:
            v = verify(c.envelope, policy)
            body = v.body
            if (channel is not None and body["channel"] != channel) or body["arch"] != arch:
                raise Rejected(f"line {c.line}: the boot manifest is for "
                               f"{body['channel']}/{body['arch']}, this machine boots "
                               f"{channel or 'any channel'}/{arch}", slug="wrong_channel",
                               hint="publish a manifest for this channel and arch")
            ok.append(v)
        except PhaseError as e:
            if not e.message.startswith("line "):
                e.message = f"line {c.line}: {e.message}"
            problem(e)
    ok.sort(key=lambda v: int(v.body["version"]), reverse=True)
    return ok


def prepare(v: Verified, blobs: Mapping[str, str], mode: str | None,
            local: tuple[str, ...] = ()) -> Plan:
    """Open and hash the kernel and initramfs; raise if either is missing or wrong."""
    body = v.body
    opened: list[File] = []
    try:
        for name in ("kernel", "initramfs"):
            opened.append(open_checked(name, body[name], blobs))
    except BaseException:
        for f in opened:
            os.close(f.fd)
        raise
    return Plan(v, opened[0], opened[1], cmdline(body, mode, local))


def open_checked(name: str, art: dict[str, Any], blobs: Mapping[str, str]) -> File:
    cid, size = art["id"], art["size"]
    path = blobs.get(cid)
    if path is None:
        raise MissingInput(f"no blob record gives a file for the {name} {cid}",
                           hint="run phase-fetch with --out-dir before phase-boot")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise MissingInput(f"the {name} file {path} does not exist") from None
    except OSError as e:
        raise IOFailure(f"cannot open the {name} file {path}: {e.strerror}") from None
    try:
        got, n = _sha256_fd(fd, size)
    except OSError as e:
        os.close(fd)
        raise IOFailure(f"cannot read the {name} file {path}: {e.strerror}") from None
    if got != cid or n != size:
        os.close(fd)
        more = "more than " if n > size else ""
        raise DigestMismatch(
            f"the {name} at {path} hashes to {got} ({more}{n} bytes); the manifest signs "
            f"{cid} ({size} bytes)", hint="the file changed after phase-fetch checked it, "
            "or the records are not phase-fetch's", name=name)
    return File(name, cid, size, os.path.abspath(path), fd)


def _sha256_fd(fd: int, size: int) -> tuple[str, int]:
    """Hash at most size + 1 bytes from offset 0 (one byte more shows a longer file)."""
    h = hashlib.sha256()
    n = 0
    while n <= size:
        chunk = os.pread(fd, min(CHUNK, size + 1 - n), n)
        if not chunk:
            break
        h.update(chunk)
        n += len(chunk)
    return "sha256:" + h.hexdigest(), n


def cmdline(body: dict[str, Any], mode: str | None, local: tuple[str, ...] = ()) -> str:
    """The signed cmdline plus only the local choices, which override it: the mode, the
    channel, and ``local`` (``proxy_words``: private mode's proxy for the next stage)."""
    words = [w for w in body["cmdline"].split() if w.split("=", 1)[0] not in LOCAL_KEYS]
    if mode is not None:
        words.append(f"phase.mode={mode}")
    words.append(f"phase.channel={body['channel']}")
    words += local
    return " ".join(words)


def proxy_words(mode: str | None, proxy: str | None, tor: bool) -> tuple[str, ...]:
    """The kernel arguments that keep the next stage in private mode over the same proxy:
    ``phase.proxy=URL``, or ``phase.tor=1`` (that stage starts its own tor). ``ValueError``
    says what is wrong: a proxy outside private mode, both at once, or a bad URL. A login
    in the URL goes along, readable in /proc/cmdline as it was on this stage's."""
    from phase_core import proxy as proxies

    if proxy is None and not tor:
        return ()
    if mode != "private":
        raise ValueError("--proxy and --tor need --mode=private (the other modes discover "
                         "over mDNS and the DHT, which cannot go through a proxy)")
    if tor:
        if proxy is not None:
            raise ValueError("give --tor or --proxy, not both")
        return ("phase.tor=1",)
    proxies.parse(str(proxy), "--proxy")  # no spaces: one kernel argument, as given
    return (f"phase.proxy={proxy}",)
