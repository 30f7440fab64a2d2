"""Run a WASM (WASI preview1) module under four fences and sign a receipt.

Usage:
  plasm-exec run [options] [--env=<K=V>]... [--dir=<spec>]... [--] <module.wasm> [<arg>...]
  plasm-exec job [options] [<jobs.jsonl>]
  plasm-exec verify [options] [--manifest=<file>] <receipt>
  plasm-exec key [options]
  plasm-exec (-h | --help)
  plasm-exec --version

Commands:
  run     Run a module like `wasmtime run`: the guest's stdin, stdout and stderr are
          this process's own, streamed. Options go before the module; everything
          after it is the guest's (one `--` right after the module is dropped).
  job     Read JSON-line job records (phase-verify's verified job_manifest records,
          signed job manifests, or {"type":"job","manifest":{...},"module_path":...,
          "stdin_path":...}) and write one job_result record per job (the signed
          receipt under "envelope"), followed by a job_failed error record when the
          guest did not exit 0. Inputs come from the content store (phase-fetch puts
          them there). Upstream error records are passed on; other records are
          dropped (docs/pipeline.md).
  verify  Re-run the module of a receipt on its inputs and limits; exit 0 when the
          outputs and fuel match, 1 naming the field that differs.
  key     Print this node's worker key as a keyring entry. To trust it, do not
          append it to a keyring; run `phase-key trust --keyring=FILE
          --name=worker --role=worker` (idempotent).

Options:
  --max-memory=<size>   Guest memory ceiling (linear memory and tables): 256M,
                        64KiB, 1048576 [default: 256M].
  --fuel=<n>            Fuel (wasm instruction budget) [default: 10000000000].
  --timeout=<duration>  Wall-clock limit: 30s, 1500ms, 2m; a bare number is
                        seconds, decimals allowed [default: 30s].
  --max-output=<size>   Combined stdout+stderr ceiling [default: 16M].
  --env=<K=V>           Set a guest environment variable (nothing is inherited).
  --dir=<spec>          Preopen <host>[::<guest>][:rw] (guest path = host path when
                        omitted), read-only unless :rw.
  --guest-stderr=<how>  run: the guest's stderr is `raw` (as is, on our stderr), or
                        `framed`: each line is a `plasm.guest.stderr` JSON log record,
                        so it cannot pass for one of ours. `auto`: raw when stderr
                        is a terminal, framed otherwise [default: auto].
  --deterministic       Fixed clocks, seeded random_get, no writable dirs; stdin is
                        read whole before the guest starts. Recorded in the receipt.
  --receipt=<file>      Write the signed receipt here (and the job manifest beside it,
                        as <name>.manifest.json); module and stdin go to the store.
  --key=<file>          Signing key (default: the node key under PHASE_HOME; when there
                        is none, one is created and a plasm.key.created line on stderr
                        says where).
  --home=<dir>          State directory (overrides PHASE_HOME).
  --keys=<keyring>      job: only run manifests signed by a trusted job-submitter;
                        verify: require a trusted worker signature.
  --manifest=<file>     verify: the job manifest (default: <receipt>.manifest.json).
  --now=<time>          job: check manifest validity at this RFC 3339 time.
  --name=<name>         key: the entry's name (default: worker-<id prefix>).
  --no-cache            Do not read or write the compiled-module cache.
  -q, --quiet           Print no records; the exit status answers.
  -v, --verbose         More log lines on stderr (-vv for debug).
  --log-format=FMT      json, text or auto (text on a terminal); also PHASE_LOG_FORMAT.
  -h, --help            Show this help.
  --version             Show the version.

Limits in job mode are ceilings: a manifest's limits are lowered to them.

Exit status:
  run: the guest's exit code (0-125), or when a fence ended the run:
    134  trapped (a wasm trap, as `wasmtime run`)
    151  out of fuel
    152  wall-clock timeout
    153  memory limit reached, then the guest failed
    154  output limit passed
    130 / 143  stopped by SIGINT (Ctrl-C) / SIGTERM; no receipt is written
    141  the reader of stdout went away (broken pipe); no receipt is written
  job: 0 all jobs ran and exited 0; 1 a job failed or was rejected; 65 a bad record;
    66 no job in the input; an upstream error record's exit_code.
  verify: 0 re-execution matches; 1 it differs, or the receipt does not verify.
  Any command: 64 usage, 65 bad module or document, 66 missing file, 70 internal
  error (a bug), 74 I/O error (read-only, full or unwritable file system),
  130 / 143 SIGINT / SIGTERM (the guest is stopped first).
"""

from __future__ import annotations

from plasm_exec import __version__

# Not typing.TYPE_CHECKING: this module must import nothing before entry() has raised the
# garbage collector's threshold (importing typing alone costs 7 collections); type
# checkers know the name.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn

TOOL = "plasm-exec"
DOC = __doc__ or ""
GC_THRESHOLD = 100_000  # allocations between two collections of the youngest objects


def main(args: dict[str, Any]) -> int:
    from phase_core import log
    from plasm_exec import run
    from plasm_exec.signals import SignalGuard, Stop

    guard = SignalGuard().install()
    try:
        if args["run"]:
            return run.cmd_run(args, guard)
        if args["job"]:
            return run.cmd_job(args, guard)
        if args["verify"]:
            return run.cmd_verify(args, guard)
        return run.cmd_key(args)
    except Stop as e:
        log.get().warning("plasm.interrupted", signal=e.name, exit_code=e.exit_code,
                          message=f"stopped by {e.name}; no receipt was written for "
                                  "the interrupted run")
        return e.exit_code
    finally:
        guard.restore()


# `run` options that take their value as the next word (`--env A=1`)
_VALUE_OPTIONS = frozenset({"--max-memory", "--fuel", "--timeout", "--max-output", "--env",
                            "--guest-stderr",
                            "--dir", "--receipt", "--key", "--home", "--keys", "--manifest",
                            "--now", "--name", "--log-format"})


def split_guest_args(argv: list[str]) -> list[str]:
    """``run``: everything after the module belongs to the guest, as with `wasmtime run`.

    Puts a ``--`` in front of the module so the parser never reads the guest's words
    as our options (one ``--`` the user wrote right after the module is dropped).
    """
    cmd = _skip_options(argv, 0)
    if cmd >= len(argv) or argv[cmd] != "run":
        return argv
    i = _skip_options(argv, cmd + 1)
    head = argv[:i]
    if i < len(argv) and argv[i] == "--":
        i += 1
    if i >= len(argv):
        return argv
    rest = argv[i + 1:]
    if rest[:1] == ["--"]:
        rest = rest[1:]
    return [*head, "--", argv[i], *rest]


def _skip_options(argv: list[str], i: int) -> int:
    """The index of the first word at or after ``i`` that is not one of our options."""
    while i < len(argv):
        a = argv[i]
        if a == "--" or not a.startswith("-") or a == "-":
            return i
        i += 2 if a in _VALUE_OPTIONS else 1
    return i


def cli(argv: list[str]) -> int:
    """In-process entry for tests: ``cli(["run", "x.wasm"])``."""
    from phase_core.cli.runner import run_cli
    from plasm_exec.fastargs import parse_run
    return run_cli(TOOL, DOC, __version__, main, split_guest_args(list(argv)),
                   fast=parse_run)


def entry() -> NoReturn:
    import gc
    import sys

    # A cold start allocates some 50 000 objects (most of them wasmtime's ctypes
    # bindings) and no garbage cycles worth finding: at Python's default threshold
    # (700) that costs some 35 collections, about 4 ms. Collections still run, rarer.
    # (This module imports next to nothing, so that this comes first.)
    gc.set_threshold(GC_THRESHOLD)
    from phase_core.cli.runner import run_cli
    from plasm_exec.fastargs import parse_run
    leave(run_cli(TOOL, DOC, __version__, main, split_guest_args(sys.argv[1:]),
                  fast=parse_run))


def leave(status: int) -> NoReturn:
    """End the process with ``status``, skipping the interpreter's teardown when it is safe.

    Tearing the interpreter down (freeing every module, the wasmtime engine and
    its compiled code) takes 10-15 ms, longer than a small guest's whole run;
    nothing in it is needed once the command has returned. Every command has by
    then written and closed its files itself: receipts, manifests and cache
    entries are written atomically (temp file fsync'd, renamed, directory
    fsync'd), content-store blobs are committed, the guest's output went out
    through ``os.write`` from threads that were joined, and log lines are
    flushed one by one; memfds and pipes need no clean-up. What is
    left is Python's own buffers: stdout and stderr are flushed here, and only
    when that succeeds, no thread other than daemons is still running and no
    ``atexit`` hook was registered, the process ends with ``os._exit``. Otherwise
    (a flush that fails, e.g. the reader of stdout went away) it ends through
    ``sys.exit`` as before, with the same status and messages.
    """
    import os
    import sys
    import threading
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except (OSError, ValueError):
        sys.exit(status)
    if _teardown_needed(threading):
        sys.exit(status)
    os._exit(status)


def _teardown_needed(threading: Any) -> bool:
    """Whether the interpreter's normal exit still has work: threads to join, exit hooks."""
    import atexit
    others = [t for t in threading.enumerate()
              if t is not threading.main_thread() and not t.daemon and t.is_alive()]
    hooks = getattr(atexit, "_ncallbacks", lambda: 1)()
    return bool(others) or hooks > 0 or bool(getattr(threading, "_threading_atexits", ()))
