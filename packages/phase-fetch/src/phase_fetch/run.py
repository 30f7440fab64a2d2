"""phase-fetch's decisions: parse options, run get / pipeline / cas, choose the exit status."""

from __future__ import annotations

import os
import queue
import sys
import threading
import traceback
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from phase_core import exitcodes, home, log, proxy
from phase_core.canonical import check_content_id
from phase_core.cas import ContentStore
from phase_core.cli.jsonl import write_record
from phase_core.cli.pipeline import Stage, upstream_exit_code
from phase_core.documents import Mark, Policy
from phase_core.errors import InputError, IOFailure, PhaseError, UsageError
from phase_core.timefmt import now as wall_now
from phase_core.timefmt import parse_time
from phase_core.trust import Keyring
from phase_fetch import housekeeping
from phase_fetch.fetcher import Fetcher, Options
from phase_fetch.progress import Progress
from phase_fetch.records import SIGNED_TYPES, Job, acts_on, parse_record
from phase_fetch.sources import exists_dir
from phase_fetch.want import Fetched, Want, check_mirror, check_name, check_size


def _number(args: dict[str, Any], opt: str, kind: type, minimum: float) -> Any:
    raw = args[opt]
    try:
        value = kind(raw)
    except (TypeError, ValueError):
        raise UsageError(f"{opt} {raw!r} is not a number") from None
    if value < minimum or value != value:
        raise UsageError(f"{opt} must be at least {minimum}")
    return value


def options(args: dict[str, Any]) -> Options:
    max_bytes = args["--max-bytes"]
    return Options(
        connect_timeout_s=_number(args, "--connect-timeout", float, 0.001),
        read_timeout_s=_number(args, "--read-timeout", float, 0.001),
        retries=_number(args, "--retries", int, 0),
        backoff_s=_number(args, "--backoff", float, 0),
        max_redirects=_number(args, "--max-redirects", int, 0),
        min_rate_bps=_number(args, "--min-rate", int, 0),
        source_timeout_s=_number(args, "--source-timeout", float, 0.001),
        max_bytes=None if max_bytes is None else _number(args, "--max-bytes", int, 1),
        jobs=_number(args, "--jobs", int, 1),
        resume=not args["--no-resume"],
        proxy=proxy.resolve(args["--proxy"], os.environ.get(proxy.ENV)),
    )


def main(args: dict[str, Any]) -> int:
    phase_home = home.resolve(args["--home"])
    cas_root = Path(args["--cas"]) if args["--cas"] else home.cas_path(phase_home)
    out = None if args["--quiet"] else sys.stdout
    if args["cas"]:
        return housekeeping.main(args, ContentStore(cas_root), out)
    # everything the user gave is checked before any I/O
    opts = options(args)
    if opts.proxy is not None:
        log.get().info("fetch.proxy", proxy=opts.proxy.name,
                       message="every mirror is asked through the proxy, host names "
                               "unresolved here")
    mirrors = [check_mirror(m) for m in args["--mirror"]]
    want = None
    if args["get"]:
        size = None if args["--size"] is None else _size(args["--size"])
        want = Want(check_content_id(args["<content-id>"]), size)
    dirs = [exists_dir(d) for d in args["--from-dir"]]
    store = ContentStore(cas_root)
    with Fetcher(store, mirrors=mirrors, local_dirs=dirs, options=opts) as fetcher:
        progress = None
        if not args["--quiet"] and sys.stderr.isatty():
            progress = Progress(fetcher.active).start()
        try:
            if want is not None:
                return get(fetcher, want, args["--out"], out)
            ctx = PipelineContext(phase_home, args["--keys"], args["--now"],
                                  Path(args["--out-dir"]) if args["--out-dir"] else None)
            return pipeline(fetcher, sys.stdin.buffer, out, ctx)
        except KeyboardInterrupt:
            fetcher.cancel.set()
            raise
        finally:
            if progress is not None:
                progress.stop()


def _size(raw: str) -> int:
    try:
        return check_size(int(raw), "--size")
    except ValueError:
        raise InputError(f"--size {raw!r} is not a number of bytes") from None


def get(fetcher: Fetcher, want: Want, out_path: str | None, out: IO[str] | None) -> int:
    got = fetcher.fetch(want)
    placed = None
    if out_path is not None:
        placed = fetcher.store.export(got.id, Path(out_path))
    if out is not None:
        write_record(got.record(out=placed), out)
    return exitcodes.OK


# -- pipeline -----------------------------------------------------------------------------

@dataclass
class PipelineContext:
    home: Path
    keys: str | None
    now: str | None
    out_dir: Path | None
    _keyring: Keyring | None = field(default=None, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def policy(self, doc_type: str) -> Policy:
        with self._lock:
            if self._keyring is None:
                path = Path(self.keys) if self.keys else home.keyring_path(self.home)
                self._keyring = Keyring.load(path)
            keyring = self._keyring
        now = parse_time(self.now, "--now") if self.now else wall_now()
        return Policy(keyring, now, expected_type=doc_type, marks=self._marks())

    def _marks(self) -> dict[str, Mark]:
        """Rollback marks phase-verify recorded (read only; phase-fetch never writes them)."""
        from phase_core.state import StateStore, default_state_path

        path = default_state_path(self.home)
        return StateStore(path).marks() if path.exists() else {}


# (job, its blob futures, an error of this stage) or an upstream error record to pass on
Item = tuple[Job | None, list[Future[Fetched]], PhaseError | None] | dict[str, Any]


def pipeline(fetcher: Fetcher, src: IO[bytes], out: IO[str] | None,
             ctx: PipelineContext) -> int:
    """Read records, fetch in parallel, write results in input order."""
    if ctx.out_dir is not None:
        make_out_dir(ctx.out_dir)
    items: queue.Queue[Item | None] = queue.Queue(maxsize=max(64, 4 * fetcher.options.jobs))
    status = [exitcodes.OK]
    stage = Stage("fetch", out, acts_on, forward=items.put)  # written in order by _emit
    emitter = threading.Thread(target=_emit, args=(items, fetcher, out, ctx, status),
                               name="phase-fetch-emit")
    emitter.start()
    try:
        for lineno, rec in stage.read(src):
            if isinstance(rec, PhaseError):
                items.put((None, [], rec))
                continue
            try:
                job = parse_record(rec, lineno, ctx.policy)
            except PhaseError as e:
                e.message = e.message if e.message.startswith("line ") else \
                    f"line {lineno}: {e.message}"
                items.put((None, [], e))
                continue
            assert job is not None  # acts_on() let only parseable types through
            items.put((job, [fetcher.submit(w) for _, w in job.wants], None))
    except BaseException:
        fetcher.cancel.set()  # Ctrl-C or a bug: stop the downloads, then report
        raise
    finally:
        items.put(None)
        emitter.join()
    if status[0] == exitcodes.BROKEN_PIPE:
        raise BrokenPipeError  # run_cli turns it into 141 and quiets stdout
    stage.note(status[0])
    return stage.finish("record to fetch (a verified manifest, a signed manifest or a "
                        "fetch request)")


def make_out_dir(path: Path) -> None:
    """Create --out-dir (and its parents) if missing; it must be a directory."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise InputError(f"--out-dir {str(path)!r} exists and is not a directory") from None
    except OSError as e:
        raise IOFailure(f"cannot create --out-dir {str(path)!r}: {e.strerror}",
                        hint="check the parent directory's permissions") from None


def _emit(items: queue.Queue[Item | None], fetcher: Fetcher, out: IO[str] | None,
          ctx: PipelineContext, status: list[int]) -> None:
    """Write results in input order. Never dies: the reader must always be able to put."""
    while (item := items.get()) is not None:
        try:
            if isinstance(item, dict):  # an upstream error record: on, unchanged
                code = upstream_exit_code(item)
                if out is not None:
                    write_record(item, out)
            else:
                code = _emit_one(*item, fetcher, out, ctx)
        except PhaseError as e:  # e.g. an I/O error placing a blob in --out-dir
            try:
                code = _error(e, out)
            except BrokenPipeError:
                code = exitcodes.BROKEN_PIPE
        except BrokenPipeError:
            code = exitcodes.BROKEN_PIPE
        except Exception as e:
            log.get().error("phase-fetch.internal_error", error="internal",
                            message=f"internal error: {type(e).__name__}: {e} (this is a bug)",
                            traceback=traceback.format_exc())
            code = exitcodes.SOFTWARE
        if code == exitcodes.BROKEN_PIPE:  # nobody reads any more: stop fetching
            fetcher.cancel.set()
            out = None
            status[0] = code
        elif status[0] != exitcodes.BROKEN_PIPE:
            status[0] = exitcodes.worst(status[0], code)


def _error(e: PhaseError, out: IO[str] | None, **extra: Any) -> int:
    log.get().error("fetch.failed", **e.to_record(), **extra)
    if out is not None:
        write_record({"v": 1, "type": "error", **e.to_record(), **extra}, out)
    return e.exit_code


def _emit_one(job: Job | None, futs: list[Future[Fetched]], err: PhaseError | None,
              fetcher: Fetcher, out: IO[str] | None, ctx: PipelineContext) -> int:
    if err is not None or job is None:
        assert err is not None
        return _error(err, out)
    code = exitcodes.OK
    paths: dict[str, str] = {}
    out_paths: dict[str, str] = {}
    for (slot, _want), fut in zip(job.wants, futs, strict=True):
        try:
            got = fut.result()
        except PhaseError as e:
            code = exitcodes.worst(code, _error(e, out, line=job.line, name=slot))
            continue
        placed = None
        if ctx.out_dir is not None:
            placed = fetcher.store.export(got.id, ctx.out_dir / check_name(slot))
            out_paths[slot] = str(placed)
        paths[slot] = str(got.path)
        if out is not None:
            write_record(got.record(name=slot, out=placed), out)
    if code == exitcodes.OK and out is not None:
        rec = dict(job.record)
        if job.wants and rec.get("type") not in SIGNED_TYPES:  # an envelope stays as signed
            rec["paths"] = paths
            if out_paths:
                rec["out_paths"] = out_paths
        write_record(rec, out)
    return code
