"""Run a WASM (WASI preview1) module under four fences and sign a receipt.

Usage:
  plasm-exec run [options] [--env=<K=V>]... [--dir=<spec>]... <module.wasm> [--] [<arg>...]
  plasm-exec job [options] [<jobs.jsonl>]
  plasm-exec verify [options] [--manifest=<file>] <receipt>
  plasm-exec key [options]
  plasm-exec (-h | --help)
  plasm-exec --version

Commands:
  run     Run a module like `wasmtime run`: the guest's stdin, stdout and stderr are
          this process's own, streamed. Guest arguments that start with - go after --.
  job     Read JSON-line job records (phase-verify's verified job_manifest records,
          signed job manifests, or {"type":"job","manifest":{...},"module_path":...,
          "stdin_path":...}) and write one job_result record per job (the signed
          receipt under "envelope"), followed by a job_failed error record when the
          guest did not exit 0. Inputs come from the content store (phase-fetch puts
          them there). Upstream error records are passed on; other records are
          dropped (docs/pipeline.md).
  verify  Re-run the module of a receipt on its inputs and limits; exit 0 when the
          outputs and fuel match, 1 naming the field that differs.
  key     Print this node's worker key as a keyring entry (append it to a keyring
          that phase-verify --keys reads).

Options:
  --max-memory=<bytes>  Linear memory ceiling [default: 256M].
  --fuel=<n>            Fuel (wasm instruction budget) [default: 10000000000].
  --timeout=<seconds>   Wall-clock limit, decimals allowed [default: 30].
  --max-output=<bytes>  Combined stdout+stderr ceiling [default: 16M].
  --env=<K=V>           Set a guest environment variable (nothing is inherited).
  --dir=<spec>          Preopen <host>::<guest>[:rw], read-only unless :rw.
  --deterministic       Fixed clocks, seeded random_get, no writable dirs; stdin is
                        read whole before the guest starts. Recorded in the receipt.
  --receipt=<file>      Write the signed receipt here (and the job manifest beside it,
                        as <name>.manifest.json); module and stdin go to the store.
  --key=<file>          Signing key (default: the node key under PHASE_HOME, created
                        on first use).
  --home=<dir>          State directory (overrides PHASE_HOME).
  --keys=<keyring>      job: only run manifests signed by a trusted job-submitter;
                        verify: require a trusted worker signature.
  --manifest=<file>     verify: the job manifest (default: <receipt>.manifest.json).
  --now=<time>          job: check manifest validity at this RFC 3339 time.
  --name=<name>         key: the entry's name (default: worker-<id prefix>).
  --no-cache            Do not read or write the compiled-module cache.
  -q, --quiet           Print no records; the exit status answers.
  -v, --verbose         More log lines on stderr (-vv for debug).
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
  job: 0 all jobs ran and exited 0; 1 a job failed or was rejected; 65 a bad record;
    66 no job in the input; an upstream error record's exit_code.
  verify: 0 re-execution matches; 1 it differs, or the receipt does not verify.
  Any command: 64 usage, 65 bad module or document, 66 missing file, 70 internal error.
"""

from __future__ import annotations

from typing import Any

from phase_core.cli.runner import entry as _entry
from phase_core.cli.runner import run_cli
from plasm_exec import __version__

TOOL = "plasm-exec"
DOC = __doc__ or ""


def main(args: dict[str, Any]) -> int:
    from plasm_exec import run

    if args["run"]:
        return run.cmd_run(args)
    if args["job"]:
        return run.cmd_job(args)
    if args["verify"]:
        return run.cmd_verify(args)
    return run.cmd_key(args)


def cli(argv: list[str]) -> int:
    """In-process entry for tests: ``cli(["run", "x.wasm"])``."""
    return run_cli(TOOL, DOC, __version__, main, argv)


def entry() -> None:
    _entry(TOOL, DOC, __version__, main)
