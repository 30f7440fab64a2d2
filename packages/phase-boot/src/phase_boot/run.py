"""phase-boot's decisions: options, which manifest to boot, the exit status."""

from __future__ import annotations

import contextlib
import platform
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from phase_boot import kexec, plan, records, summary
from phase_boot.records import Problem
from phase_core import boot, exitcodes, home, log
from phase_core.canonical import canonical
from phase_core.cli.jsonl import write_record
from phase_core.documents import Policy
from phase_core.errors import MissingInput, PhaseError, UsageError
from phase_core.fsutil import write_atomic
from phase_core.state import StateStore
from phase_core.timefmt import now as wall_now
from phase_core.timefmt import parse_time
from phase_core.trust import Keyring

MODES = ("internet", "local", "private")


@dataclass
class Options:
    policy: Policy
    channel: str | None
    arch: str
    mode: str | None
    local: tuple[str, ...]
    keep: Path | None
    summary: Path | None
    logs: list[Path]
    dry_run: bool
    load_only: bool


def options(args: dict[str, Any]) -> Options:
    """Every option checked, the keyring and the rollback marks read, before any input."""
    if args["--dry-run"] and args["--load-only"]:
        raise UsageError("--dry-run and --load-only exclude each other")
    channel, arch, mode = args["--channel"], args["--arch"] or platform.machine(), args["--mode"]
    try:
        if channel is not None:
            boot.CHANNEL(channel, "--channel")
        boot.ARCH(arch, "--arch")
    except PhaseError as e:
        raise UsageError(e.message) from None
    if mode is not None and mode not in MODES:
        raise UsageError(f"--mode must be one of {', '.join(MODES)}")
    try:
        local = plan.proxy_words(mode, args["--proxy"], bool(args["--tor"]))
    except ValueError as e:
        raise UsageError(str(e), hint="e.g. --mode=private --proxy=socks5h://10.0.2.2:1080"
                         ) from None
    phase_home = home.resolve(args["--home"])
    keyring = Keyring.load(Path(args["--keys"]) if args["--keys"] else
                           home.keyring_path(phase_home))
    state = Path(args["--state"]) if args["--state"] else home.state_path(phase_home)
    now = parse_time(args["--now"], "--now") if args["--now"] else wall_now()
    policy = Policy(keyring, now, expected_type=boot.TYPE, marks=StateStore(state).marks())
    return Options(policy, channel, arch, mode, local,
                   Path(args["--keep"]) if args["--keep"] else None,
                   Path(args["--summary"]) if args["--summary"] else None,
                   [Path(p) for p in args["--log"]], bool(args["--dry-run"]),
                   bool(args["--load-only"]))


def main(args: dict[str, Any]) -> int:
    if args["exec"]:
        return kexec.exec_loaded()
    opts = options(args)
    out = None if args["--quiet"] else sys.stdout
    with _input(args["<file>"]) as src:
        inp = records.read(src, out)
    own = inp.own

    def problem(e: PhaseError) -> None:
        records.own(inp, e, out, "boot.rejected")

    for v in plan.verified(inp.candidates, opts.policy, opts.channel, opts.arch, problem):
        try:
            chosen = plan.prepare(v, inp.blobs, opts.mode, opts.local)
        except PhaseError as e:
            problem(e)
            continue
        try:
            return _boot(chosen, opts, out)
        except PhaseError as e:
            problem(e)
            return _nothing(opts, inp.upstream, own, e.exit_code)
        finally:
            chosen.close()
    if not inp.candidates and not inp.upstream and not own:  # else those errors say why
        problem(MissingInput("no boot manifest in the input" if inp.records else
                             "no records in the input",
                             hint="pipe phase-fetch --out-dir=DIR's output into phase-boot"))
    status = exitcodes.OK
    for p in inp.upstream + own:
        status = exitcodes.worst(status, p.exit_code)
    return _nothing(opts, inp.upstream, own, status)


def _boot(chosen: plan.Plan, opts: Options, out: IO[str] | None) -> int:
    """Load (unless --dry-run), keep, report; then reboot into it (unless told not to)."""
    if not opts.dry_run:
        kexec.load(chosen.kernel.fd, chosen.initramfs.fd, chosen.cmdline, arch=opts.arch)
    if opts.keep is not None:
        write_atomic(opts.keep, canonical(chosen.doc.envelope) + b"\n", mode=0o600)
    log.get().info("boot.loaded", id=chosen.doc.id, version=chosen.doc.body["version"],
                   dry_run=opts.dry_run, cmdline=chosen.cmdline)
    if out is not None:
        write_record(chosen.record(dry_run=opts.dry_run, loaded=not opts.dry_run), out)
    summary.write(opts.summary, chosen.summary())
    if opts.dry_run or opts.load_only:
        return exitcodes.OK
    return kexec.exec_loaded()


def _nothing(opts: Options, upstream: list[Problem], own: list[Problem], status: int) -> int:
    problems = summary.problems_from(opts.logs, upstream, own)
    line = summary.explain(problems, status)
    log.get().error("boot.nothing_loaded", error="nothing_loaded", message=line,
                    exit_code=status)
    summary.write(opts.summary, line)
    return status


@contextlib.contextmanager
def _input(name: str | None) -> Iterator[IO[bytes]]:
    if name is None or name == "-":
        yield sys.stdin.buffer
        return
    try:
        f = open(name, "rb")
    except FileNotFoundError:
        raise MissingInput(f"no such file: {name}") from None
    with f:
        yield f
