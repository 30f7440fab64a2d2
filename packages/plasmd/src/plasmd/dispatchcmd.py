"""``plasmd dispatch``: the command line's options turned into a dispatch.

cli.py parses; this checks the options (64 on a bad one), loads the home's key
and its disagreement log, builds the scheduler, the nodes and the dispatcher,
and runs it over the input (docs/dispatch.md).
"""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path
from typing import Any

from phase_core import log
from phase_core.cli.jsonl import write_record
from phase_core.errors import InputError, PhaseError, UsageError
from plasmd import quorum as q

SETTLE = ("none", "reexec")


def _count(args: dict[str, Any], name: str, default: int | None, low: int = 1) -> int | None:
    text = args.get(name)
    if text is None:
        return default
    try:
        n = int(text)
    except ValueError:
        raise UsageError(f"{name} must be an integer, not {text!r}") from None
    if n < low:
        raise UsageError(f"{name} must be at least {low}")
    return n


def options(args: dict[str, Any]) -> dict[str, Any]:
    """The dispatch's settings from docopt's answer; a bad value is a usage error."""
    from phase_core import units

    replicas = _count(args, "--replicas", 1)
    assert replicas is not None
    quorum = _count(args, "--quorum", replicas // 2 + 1)
    assert quorum is not None
    why = q.check_params(replicas, quorum)
    if why is not None:
        raise UsageError(why, hint="e.g. --replicas=3 --quorum=2")
    settle = args.get("--settle") or "none"
    if settle not in SETTLE:
        raise UsageError("--settle is none or reexec")
    if settle == "reexec" and not args.get("--deterministic"):
        raise UsageError("--settle=reexec needs --deterministic",
                         hint="only a deterministic job gives the same output when re-run")
    attempts = _count(args, "--max-attempts", replicas + 3)
    assert attempts is not None
    if attempts < replicas:
        raise UsageError("--max-attempts cannot be below --replicas")
    timeout = None
    if args.get("--job-timeout"):
        timeout = units.parse_duration(args["--job-timeout"], "--job-timeout") / 1000
    deadline = None
    if args.get("--job-deadline"):
        deadline = units.parse_duration(args["--job-deadline"], "--job-deadline") / 1000
        if deadline <= 0:
            raise UsageError("--job-deadline must be positive", hint="e.g. --job-deadline=10m")
    if args.get("--via", "both") not in ("mdns", "dht", "both"):
        raise UsageError("--via is mdns, dht or both")
    return {"replicas": replicas, "quorum": quorum, "settle": settle,
            "max_attempts": attempts, "job_timeout_s": timeout, "job_deadline_s": deadline,
            "max_per_node": _count(args, "--max-per-node", None),
            "max_pending": _count(args, "--max-pending", 256),
            "avoid_after": _count(args, "--avoid-after", 3),
            "distinct_hosts": bool(args.get("--distinct-addresses")),
            "same_node_retry": bool(args.get("--retry-same-node"))}


def main(home: Path, args: dict[str, Any]) -> int:
    from phase_core import units
    from plasmd.run import _flag, _node_key
    from plasmd.submit import parse_peer

    opts = options(args)
    peers = [p for p in (args.get("--peer") or "").split(",") if p]
    for p in peers:
        _flag(lambda: parse_peer(p), "--peer")  # noqa: B023 - called at once
    discovery = None
    if not peers:
        dt = units.parse_duration(args.get("--discover-timeout") or "5s",
                                  "--discover-timeout")
        discovery = {"via": args.get("--via") or "both",
                     "bootstrap": list(args.get("--bootstrap") or []),
                     "interfaces": list(args.get("--interface") or []) or None,
                     "timeout_s": dt / 1000}
    ident = _node_key(home, "then sign the jobs with its key")
    from plasm_exec.jobpipe import open_jobs

    src = open_jobs(args.get("--jobs") or "-")
    out = None if args.get("--quiet") else sys.stdout
    return asyncio.run(run(home, ident, peers, src, out, opts, discovery))


async def run(home: Path, ident: Any, peers: list[str], src: Any, out: Any,
              opts: dict[str, Any], discovery: dict[str, Any] | None) -> int:
    from phase_core import home as homes
    from phase_core.cas import ContentStore
    from plasmd import dispatchio as io
    from plasmd import dispatchsched as ds
    from plasmd.disagreelog import DisagreementLog, log_path
    from plasmd.dispatch import Dispatcher
    from plasmd.dispatchnodes import Nodes, fits
    from plasmd.submitmany import _acts_on, _Stage

    dlog = DisagreementLog(log_path(home), ident)
    flagged = dlog.counts()  # verified: a damaged log stops here (exit 1)
    lock = threading.RLock()

    def emit(rec: dict[str, Any]) -> None:
        if out is not None:
            with lock:
                write_record(rec, out)

    stage = _Stage("plasmd.dispatch", out, _acts_on, forward=emit)
    stage.lock = lock
    sched = ds.Scheduler(replicas=opts["replicas"], quorum=opts["quorum"],
                         max_attempts=opts["max_attempts"],
                         distinct_hosts=opts["distinct_hosts"],
                         same_node_retry=opts["same_node_retry"],
                         max_pending=opts["max_pending"], avoid_flagged=opts["avoid_after"],
                         fits=fits, deadline_s=opts["job_deadline_s"])
    holder: list[Dispatcher] = []

    def on_node(node_id: str, host: str, address: str, capacity: int,
                caps: dict[str, Any] | None) -> None:
        holder[0].node_added(node_id, host, address, capacity, caps, flagged[node_id])

    nodes = Nodes(ident, on_node=on_node, max_per_node=opts["max_per_node"])
    settle = reexec_settler(home) if opts["settle"] == "reexec" else None
    d = Dispatcher(sched, nodes, emit, job_timeout_s=opts["job_timeout_s"], dlog=dlog,
                   settle=settle)
    holder.append(d)
    try:
        if peers:
            sched.discovering = True  # the peers are still being asked
            await asyncio.gather(*(nodes.add_peer(p) for p in peers))
            sched.discovering = False
            if not nodes.pools:
                from phase_core.errors import Unavailable

                raise Unavailable("no --peer answered", hint="check the addresses and "
                                  "that plasmd runs there")
        blobs = io.BlobCache(ContentStore(homes.cas_path(home), create=False))
        reader = io.Reader(io.read_jobs(stage, src, blobs))
        status = await d.run(reader, discovery=discovery)
    finally:
        await nodes.close()
    log.get().info("dispatch.done", most_live=d.most_live, nodes=len(nodes.pools),
                   status=status)
    if status == 130:
        return status
    stage.note(status)
    return stage.finish("job (a job record, a signed job_manifest or a verified one)")


def reexec_settler(home: Path) -> Any:
    """Re-execute a job here (plasm-exec's library): the vote of the local run."""
    from plasm_exec.api import Executor, run_spec_from_manifest
    from plasmd.pool import Job

    ex = Executor(home)

    def settle(job: Job) -> q.Key:
        body = job.manifest["body"]
        if not body.get("deterministic"):
            raise InputError(f"job {job.id} does not ask for the deterministic profile: "
                             "a re-run proves nothing", slug="not_deterministic")
        try:
            prog = ex.load(job.blobs[body["module"]], body["module"])
            res = ex.run(prog, run_spec_from_manifest(body),
                         stdin=job.blobs.get(body["stdin"]) if body["stdin"] else None)
        except PhaseError:
            raise
        o = res.outcome
        return (str(o.ended), o.exit_code, res.stdout_id, res.stderr_id)

    return settle
