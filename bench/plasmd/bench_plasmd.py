"""plasmd benchmarks, each side by side with its reference in one run, ratios printed.

    .venv/bin/python bench/plasmd/bench_plasmd.py [--quick] [--only 1,2,3,4] [--json]
        [--before DIR]

``--json`` prints one JSON line per goal row (``row``, ``measurement``, ``ours_ms`` or
``ours_jobs_per_s``, ``reference``, ``reference_ms``, ``ratio``, ``goal``, ``met``, and
the CPU per job of each side); ``--before DIR`` first runs the same rows against the
sources of an earlier checkout (e.g. ``git archive <commit> | tar -x -C DIR``) and
prints before -> after.

Every benchmark talks to a real worker: ``plasmd start --open --listen=127.0.0.1:0``
in a throw-away home, started here (one fresh worker per benchmark). The raw aioquic
references run in a separate server process too (this script with ``--raw-server``),
so both sides of each comparison cross a process boundary on loopback.

1. Remote hello latency on one warm connection (p50 / p99, >= 1000 jobs): a new signed
   manifest per job, then ``plasmd.submit._exchange`` (offer, accept, run, result,
   receipt verified). Against (a) a raw aioquic 32-byte echo round trip and (b) the
   in-process ``Executor.run`` of hello. Interleaved in rounds. Goal p50 <= 2 x (a + b).
2. Cold client: ``plasmd submit hello.wasm --peer=...`` whole process vs ``plasm-exec
   run hello.wasm`` whole process (warm compile cache, .pyc written first), interleaved.
   Goal <= 2x.
3. Throughput: one load process (this script with ``--load``) running N concurrent
   asyncio submit loops over ONE warm connection (the shape of a ``Pool``), N = 1, 8, 64;
   manifests signed before the clock starts. Jobs/s and CPU time per job (worker from
   /proc, load process from getrusage). Goal >= 1000 jobs/s at 64.
4. A 64 MiB blob over the transport: a ``get`` served by the worker's CAS (the blob is
   put into ``<home>/cas`` before the worker starts) vs a raw aioquic stream carrying
   64 MiB from the raw server process, both downloads into this process.

The machine has 2 cores shared with other work: comparisons are interleaved or repeated
and medians are reported; treat differences under ~15 % as noise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from procs import children_cpu_s, cpu_s, read_line, stop  # bench/plasmd/procs.py

ROOT = Path(__file__).resolve().parents[2]
HELLO = ROOT / "packages" / "plasm-exec" / "examples" / "build" / "hello.wasm"
BIN = Path(sys.executable).parent
STDIN = b"Hello, World"
EXPECT = b"dlroW ,olleH"
HOST = "127.0.0.1"
PAYLOAD = b"p" * 32


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def us(x: float) -> str:
    return f"{x * 1e6:8.0f} µs"


def bench_env() -> dict[str, str]:
    # An installed tool has bytecode caches; PYTHONDONTWRITEBYTECODE in a dev shell
    # would recompile every module on every start (see bench/plasm_exec/bench.py).
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONDONTWRITEBYTECODE", "PHASE_HOME")}
    return env


# -- processes ------------------------------------------------------------------

class Worker:
    """``plasmd start --open`` in a fresh home under ``root``."""

    def __init__(self, root: Path, name: str, preload: bytes | None = None) -> None:
        self.home = root / name
        env = bench_env()
        subprocess.run([str(BIN / "plasmd"), "init", "-q", f"--home={self.home}",
                        "--listen=127.0.0.1:0"], env=env, check=True)
        if preload is not None:
            from phase_core import home as homes
            from phase_core.cas import ContentStore
            self.blob_id = ContentStore(homes.cas_path(self.home)).put_bytes(preload)
        self.stderr = open(root / f"{name}.stderr", "wb")  # closed in close()
        self.proc = subprocess.Popen(
            [str(BIN / "plasmd"), "start", f"--home={self.home}", "--open",
             "--listen=127.0.0.1:0"], stdout=subprocess.PIPE, stderr=self.stderr, env=env)
        started = read_line(self.proc, 60, "plasmd start")
        assert started["type"] == "node_started", started
        self.node_id: str = started["node_id"]
        self.port = int(started["listen"][0].rsplit(":", 1)[1])
        self.peer = f"{self.node_id}@{HOST}:{self.port}"

    def cpu_s(self) -> float:
        """User + system CPU of the worker (all its threads, and its job processes) so far."""
        return cpu_s(f"/proc/{self.proc.pid}") + children_cpu_s(self.proc.pid)

    def state_bytes(self) -> int:
        p = self.home / "state.json"
        return p.stat().st_size if p.exists() else 0

    def close(self) -> None:
        stop(self.proc)
        self.stderr.close()


class RawServer:
    """This script with ``--raw-server``: raw aioquic echo and bulk, in its own process."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, "--raw-server"],
                                     stdout=subprocess.PIPE, env=bench_env())
        self.port = int(read_line(self.proc, 60, "raw server")["port"])

    def close(self) -> None:
        stop(self.proc)


# -- raw aioquic (server process and client side) --------------------------------

def raw_cfg(is_client: bool, window: int = 1 << 20) -> Any:
    from aioquic.quic.configuration import QuicConfiguration
    return QuicConfiguration(is_client=is_client, alpn_protocols=["bench/raw"],
                             verify_mode=ssl.CERT_NONE, server_name="phase-node",
                             max_data=window, max_stream_data=window)


async def raw_server_main() -> None:
    from aioquic.asyncio.server import serve

    from phase_core.aio import certs

    cert = certs.make()
    cfg = raw_cfg(False)
    cfg.certificate, cfg.private_key = cert.certificate, cert.private_key
    chunk = b"g" * (1 << 20)

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        mode = await r.readexactly(1)
        if mode == b"E":  # 32-byte echo until EOF
            while True:
                try:
                    data = await r.readexactly(32)
                except asyncio.IncompleteReadError:
                    break
                w.write(data)
        elif mode == b"G":  # send <u64 size> bytes
            size = int.from_bytes(await r.readexactly(8), "big")
            while size > 0:
                n = min(size, len(chunk))
                w.write(chunk[:n])
                size -= n
                await w.drain()
        w.write_eof()

    server = await serve(HOST, 0, configuration=cfg,
                         stream_handler=lambda r, w: asyncio.ensure_future(handle(r, w)))
    port = server._transport.get_extra_info("sockname")[1]
    print(json.dumps({"port": port}), flush=True)
    stop_ev = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop_ev.set)
    await stop_ev.wait()
    server.close()


async def raw_download(port: int, size: int, window: int) -> float:
    from aioquic.asyncio.client import connect
    async with connect(HOST, port, configuration=raw_cfg(True, window)) as proto:
        r, w = await proto.create_stream()
        t = time.perf_counter()
        w.write(b"G" + size.to_bytes(8, "big"))
        w.write_eof()
        n = 0
        while chunk := await r.read(1 << 20):
            n += len(chunk)
        dt = time.perf_counter() - t
        assert n == size, n
        return dt


# -- the job client ---------------------------------------------------------------

class JobClient:
    """A warm connection to a worker, as ``plasmd.submit.submit`` builds it, kept open."""

    def __init__(self, ident: Any | None = None) -> None:
        from phase_core.canonical import content_id
        from phase_core.identity import Identity

        self.ident = ident or Identity.generate()
        self.module = HELLO.read_bytes()
        self.blobs = {content_id(self.module): self.module, content_id(STDIN): STDIN}
        self.conns: list[Any] = []

    async def connect(self, worker_port: int, node_id: str, n: int = 1) -> None:
        from phase_core.aio.quic import Client
        from plasmd.blobs import serve_get

        async def serve(peer: str, stream: Any) -> None:  # as submit() does
            msg = await stream.recv()
            if msg is not None and msg.get("type") == "get":
                await serve_get(stream, msg, self.blobs.get)

        self.client = Client(self.ident, handler=serve)
        for _ in range(n):
            self.conns.append(await self.client.connect(HOST, worker_port,
                                                        expected_node_id=node_id))

    def manifest(self) -> tuple[dict[str, Any], str]:
        from phase_core import envelope
        from plasmd.submit import make_manifest
        env = make_manifest(self.ident, self.module, STDIN, argv=["hello.wasm"])
        return env, envelope.parse(env).id

    async def job(self, env: dict[str, Any], job_id: str, conn: Any = None) -> None:
        from phase_core.protocol.jobs_client import Submission
        from plasmd.submit import _exchange
        sub = Submission(time.monotonic, env, job_id,
                         {cid: len(data) for cid, data in self.blobs.items()}, timeout_s=60)
        out = await _exchange(conn or self.conns[0], sub)
        if out.stdout != EXPECT:
            raise AssertionError(f"unexpected stdout {out.stdout!r}")

    async def close(self) -> None:
        for c in self.conns:
            await c.close()


# -- 1. warm latency --------------------------------------------------------------------

async def bench_latency(root: Path, n: int) -> dict[str, Any]:
    from aioquic.asyncio.client import connect as raw_connect

    from plasm_exec.api import Executor, RunSpec

    rounds = 10
    per = max(1, n // rounds)
    raw = RawServer()
    w = Worker(root, "w1")
    jc = JobClient()
    ex = Executor(root / "exec-home")
    prog = ex.load(jc.module)
    s: dict[str, list[float]] = {"raw": [], "exec": [], "job": [], "sign": []}
    worker_cpu = 0.0
    try:
        await jc.connect(w.port, w.node_id)
        for _ in range(20):  # warm: module and stdin pulled once, compiled once
            await jc.job(*jc.manifest())
        async with raw_connect(HOST, raw.port, configuration=raw_cfg(True)) as proto:
            r, wr = await proto.create_stream()
            wr.write(b"E")
            for _ in range(50):
                wr.write(PAYLOAD)
                await r.readexactly(32)
            for _ in range(rounds):
                for _ in range(per):
                    t = time.perf_counter()
                    wr.write(PAYLOAD)
                    await r.readexactly(32)
                    s["raw"].append(time.perf_counter() - t)
                for _ in range(per):
                    t = time.perf_counter()
                    res = ex.run(prog, RunSpec(argv=["hello.wasm"]), stdin=STDIN)
                    s["exec"].append(time.perf_counter() - t)
                    assert res.stdout == EXPECT
                cpu0 = w.cpu_s()
                for _ in range(per):
                    t0 = time.perf_counter()
                    env, jid = jc.manifest()
                    t1 = time.perf_counter()
                    await jc.job(env, jid)
                    s["job"].append(time.perf_counter() - t1)
                    s["sign"].append(t1 - t0)
                worker_cpu += w.cpu_s() - cpu0
            wr.write_eof()
        state = w.state_bytes()
    finally:
        await jc.close()
        w.close()
        raw.close()
    a, b, job = pct(s["raw"], 50), pct(s["exec"], 50), pct(s["job"], 50)
    tenth = max(1, len(s["job"]) // 10)
    return {"n": len(s["job"]), "samples": s, "goal": 2 * (a + b), "ratio": job / (a + b),
            "first_tenth": statistics.median(s["job"][:tenth]),
            "last_tenth": statistics.median(s["job"][-tenth:]), "state_bytes": state,
            "worker_cpu_per_job": worker_cpu / max(1, len(s["job"]))}


def print_latency(res: dict[str, Any]) -> None:
    s = res["samples"]
    print(f"\n1. warm latency, {res['n']} jobs on one connection, interleaved in 10 rounds")
    rows = [("(a) raw aioquic 32-byte echo RTT", s["raw"]),
            ("(b) Executor.run(hello), in-process", s["exec"]),
            ("remote hello job (exchange+verify)", s["job"]),
            ("  + manifest signing, client side", s["sign"])]
    for name, xs in rows:
        print(f"   {name:38s} p50 {us(pct(xs, 50))}   p99 {us(pct(xs, 99))}")
    a, b = pct(s["raw"], 50), pct(s["exec"], 50)
    job = pct(s["job"], 50)
    print(f"   a + b = {us(a + b).strip()}; remote p50 = {res['ratio']:.1f} x (a + b)  "
          f"(goal <= 2.0 x: {'met' if res['ratio'] <= 2 else 'MISSED'}; "
          f"goal {us(res['goal']).strip()}, got {us(job).strip()})")
    print(f"   median of the first / last tenth of jobs: {us(res['first_tenth']).strip()} / "
          f"{us(res['last_tenth']).strip()}   (worker state.json now "
          f"{res['state_bytes'] / 1024:.0f} KiB); worker CPU/job "
          f"{us(res['worker_cpu_per_job']).strip()}")


def latency_row(res: dict[str, Any]) -> dict[str, Any]:
    s = res["samples"]
    ref = pct(s["raw"], 50) + pct(s["exec"], 50)
    ours = pct(s["job"], 50)
    return {"row": "warm_latency", "measurement": "warm hello p50 on one connection",
            "ours_ms": ours * 1e3, "p99_ms": pct(s["job"], 99) * 1e3,
            "reference": "(a) raw aioquic 32 B echo RTT + (b) in-process Executor.run",
            "reference_ms": ref * 1e3, "a_ms": pct(s["raw"], 50) * 1e3,
            "b_ms": pct(s["exec"], 50) * 1e3, "ratio": ours / ref, "goal": "<= 2x",
            "met": ours / ref <= 2, "worker_cpu_ms_per_job": res["worker_cpu_per_job"] * 1e3}


# -- 2. cold client ------------------------------------------------------------------------

def bench_cold(root: Path, runs: int) -> dict[str, Any]:
    env = bench_env()
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "packages")],
                   env=env, check=False, stdout=subprocess.DEVNULL)
    w = Worker(root, "w2")
    client_home = root / "client"
    subprocess.run([str(BIN / "plasmd"), "init", "-q", f"--home={client_home}"], env=env,
                   check=True)
    stdin_file = root / "stdin.txt"
    stdin_file.write_bytes(STDIN)
    exec_env = dict(env, PHASE_HOME=str(root / "exec-home-cold"))
    cmds = {
        "plasmd submit hello.wasm": ([str(BIN / "plasmd"), "submit", f"--home={client_home}",
                                      str(HELLO), f"--peer={w.peer}",
                                      f"--stdin={stdin_file}"], env),
        "plasm-exec run hello.wasm": ([str(BIN / "plasm-exec"), "run", str(HELLO)], exec_env),
        "python -c pass": ([sys.executable, "-c", "pass"], env),
        "python -c 'import <submit's modules>'": (
            [sys.executable, "-c", "import plasmd.cli, plasmd.run, plasmd.submit, "
             "phase_core.aio.quic, plasm_exec.run"], env),
    }
    times: dict[str, list[float]] = {k: [] for k in cmds}
    try:
        for cmd, e in cmds.values():  # warm: compile cache, page cache, first module pull
            with open(stdin_file, "rb") as f:
                r = subprocess.run(cmd, stdin=f, capture_output=True, env=e)
            if r.returncode != 0:
                raise SystemExit(f"{cmd[:2]} failed: {r.stderr.decode()[-1000:]}")
        for _ in range(runs):
            for name, (cmd, e) in cmds.items():
                with open(stdin_file, "rb") as f:
                    t = time.perf_counter()
                    r = subprocess.run(cmd, stdin=f, stdout=subprocess.PIPE,
                                       stderr=subprocess.DEVNULL, env=e)
                    times[name].append(time.perf_counter() - t)
                if name.endswith("hello.wasm") and r.stdout != EXPECT:
                    raise SystemExit(f"{name} printed {r.stdout!r}")
    finally:
        w.close()
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"runs": runs, "median": med,
            "ratio": med["plasmd submit hello.wasm"] / med["plasm-exec run hello.wasm"]}


def print_cold(res: dict[str, Any]) -> None:
    print(f"\n2. cold client, whole process, median of {res['runs']} interleaved runs")
    for name, t in res["median"].items():
        print(f"   {name:40s} {t * 1000:8.1f} ms")
    r = res["ratio"]
    print(f"   ratio plasmd submit / plasm-exec run = {r:.2f}  "
          f"(goal <= 2.00: {'met' if r <= 2 else 'MISSED'})")


# -- 3. throughput -------------------------------------------------------------------------

async def load_main(peer: str, concurrency: int, jobs: int, conns: int) -> None:
    """The load process: warm up, say ready, wait for go, run ``jobs`` jobs, report."""
    node_id, _, hostport = peer.partition("@")
    jc = JobClient()
    await jc.connect(int(hostport.rsplit(":", 1)[1]), node_id, conns)
    for i in range(max(2 * concurrency, 10)):  # warm: module pulled, every path hot
        await jc.job(*jc.manifest(), conn=jc.conns[i % conns])
    manifests = [jc.manifest() for _ in range(jobs)]
    print(json.dumps({"ready": True}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    errors: list[str] = []
    todo = iter(manifests)
    lat: list[float] = []

    async def submitter(k: int) -> None:
        conn = jc.conns[k % conns]
        for env, jid in todo:
            t = time.perf_counter()
            try:
                await jc.job(env, jid, conn)
                lat.append(time.perf_counter() - t)
            except Exception as e:  # counted and reported, the run goes on
                errors.append(f"{type(e).__name__}: {e}"[:200])

    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t = time.perf_counter()
    await asyncio.gather(*(submitter(k) for k in range(concurrency)))
    dt = time.perf_counter() - t
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    await jc.close()
    print(json.dumps({"jobs": len(lat), "errors": len(errors), "error_sample": errors[:3],
                      "seconds": dt, "client_cpu_s": cpu, "p50": pct(lat, 50) if lat else 0,
                      "p99": pct(lat, 99) if lat else 0}), flush=True)


def bench_throughput(root: Path, plan: list[tuple[int, int]], conns: int) -> list[dict[str, Any]]:
    out = []
    for concurrency, jobs in plan:
        w = Worker(root, f"w3-{concurrency}")
        try:
            load = subprocess.Popen(
                [sys.executable, __file__, "--load", w.peer, "--concurrency", str(concurrency),
                 "--jobs", str(jobs), "--connections", str(conns)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=bench_env())
            try:
                read_line(load, 300, "the load process (warm-up)")
                cpu0 = w.cpu_s()
                assert load.stdin is not None
                load.stdin.write(b"go\n")
                load.stdin.flush()
                res = read_line(load, 1800, "the load process")
                cpu1 = w.cpu_s()
                load.wait(60)
            finally:
                stop(load)
            res["concurrency"] = concurrency
            res["worker_cpu_s"] = cpu1 - cpu0
            res["state_bytes"] = w.state_bytes()
            out.append(res)
        finally:
            w.close()
    return out


def print_throughput(rows: list[dict[str, Any]], conns: int) -> None:
    print(f"\n3. throughput, one load process, N asyncio submit loops over {conns} warm "
          "connection(s), manifests pre-signed")
    print("   N    jobs   jobs/s   p50 ms   p99 ms   worker CPU/job   client CPU/job  errors")
    for r in rows:
        n = max(r["jobs"], 1)
        print(f"   {r['concurrency']:<3d} {r['jobs']:6d} {r['jobs'] / r['seconds']:8.0f} "
              f"{r['p50'] * 1000:8.2f} {r['p99'] * 1000:8.2f} "
              f"{r['worker_cpu_s'] / n * 1e6:12.0f} µs {r['client_cpu_s'] / n * 1e6:12.0f} µs"
              f"  {r['errors']:5d}")
        if r["errors"]:
            print(f"       e.g. {r['error_sample'][0]}")
    top = rows[-1]
    rate = top["jobs"] / top["seconds"]
    print(f"   at N={top['concurrency']}: {rate:.0f} jobs/s = {rate / 1000:.2f} x the goal of "
          f"1000 jobs/s ({'met' if rate >= 1000 else 'MISSED'}); worker + client CPU "
          f"{(top['worker_cpu_s'] + top['client_cpu_s']) / max(top['jobs'], 1) * 1e6:.0f} µs"
          f"/job on 2 cores caps the rate at "
          f"{2 / ((top['worker_cpu_s'] + top['client_cpu_s']) / max(top['jobs'], 1)):.0f}"
          " jobs/s")


def throughput_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        n, rate = max(r["jobs"], 1), r["jobs"] / r["seconds"]
        top = r["concurrency"] == 64
        out.append({"row": f"throughput_{r['concurrency']}",
                    "measurement": f"hello jobs/s at {r['concurrency']} concurrent submitters",
                    "ours_jobs_per_s": rate, "reference": "the goal, 1000 jobs/s" if top else None,
                    "reference_ms": None, "ratio": rate / 1000 if top else None,
                    "goal": ">= 1000 jobs/s" if top else None,
                    "met": rate >= 1000 if top else None,
                    "worker_cpu_ms_per_job": r["worker_cpu_s"] / n * 1e3,
                    "client_cpu_ms_per_job": r["client_cpu_s"] / n * 1e3,
                    "p50_ms": r["p50"] * 1e3, "p99_ms": r["p99"] * 1e3, "errors": r["errors"]})
    return out


# -- 4. a 64 MiB blob ----------------------------------------------------------------------

class _Count:
    def __init__(self) -> None:
        self.n = 0

    def write(self, data: bytes | memoryview) -> None:
        self.n += len(data)


async def bench_blob(root: Path, mib: int, reps: int) -> dict[str, Any]:
    from phase_fetch.peer import pull

    size = mib << 20
    blob = os.urandom(size)
    w = Worker(root, "w4", preload=blob)
    del blob
    raw = RawServer()
    jc = JobClient()
    t: dict[str, list[float]] = {"raw aioquic stream, 1 MiB windows": [],
                                 "raw aioquic stream, 16 MiB windows": [],
                                 "plasmd get (CAS, verified, framed)": []}
    try:
        await jc.connect(w.port, w.node_id)
        conn = jc.conns[0]
        for _ in range(reps):
            t["raw aioquic stream, 1 MiB windows"].append(
                await raw_download(raw.port, size, 1 << 20))
            t["raw aioquic stream, 16 MiB windows"].append(
                await raw_download(raw.port, size, 16 << 20))
            c = _Count()
            t0 = time.perf_counter()
            await pull(conn.open_stream, w.blob_id, max_bytes=size, writer=c)
            t["plasmd get (CAS, verified, framed)"].append(time.perf_counter() - t0)
            assert c.n == size
    finally:
        await jc.close()
        raw.close()
        w.close()
    med = {k: statistics.median(v) for k, v in t.items()}
    return {"mib": mib, "reps": reps, "median": med}


def print_blob(res: dict[str, Any]) -> None:
    size = res["mib"] << 20
    print(f"\n4. {res['mib']} MiB blob, server process -> this process, median of "
          f"{res['reps']} interleaved runs")
    med = res["median"]
    for name, dt in med.items():
        print(f"   {name:38s} {dt:6.2f} s  {size / dt / 1e6:7.1f} MB/s")
    ours = med["plasmd get (CAS, verified, framed)"]
    for ref in ("raw aioquic stream, 1 MiB windows", "raw aioquic stream, 16 MiB windows"):
        print(f"   ratio plasmd get / {ref[4:]:30s} time {ours / med[ref]:.2f} x")


# -- main -------------------------------------------------------------------------------------

async def async_benches(root: Path, a: argparse.Namespace, only: set[int]) -> dict[int, Any]:
    out: dict[int, Any] = {}
    if 1 in only:
        out[1] = await bench_latency(root, a.latency_n)
        print_latency(out[1])
    return out


def run_before(a: argparse.Namespace, tree: Path) -> list[dict[str, Any]]:
    """This bench, rows as asked, against the sources in ``tree`` (a checkout of an
    earlier commit): its packages come first on PYTHONPATH, for the worker too."""
    srcs = sorted(str(p) for p in (tree / "packages").glob("*/src"))
    env = dict(bench_env(), PYTHONPATH=os.pathsep.join(srcs))
    cmd = [sys.executable, __file__, "--json", "--only", a.only,
           "--connections", str(a.connections), "--latency-n", str(a.latency_n)]
    if a.quick:
        cmd.append("--quick")
    print(f"(before: the same rows against {tree})", file=sys.stderr, flush=True)
    r = subprocess.run(cmd, stdout=subprocess.PIPE, env=env, check=True)
    return [json.loads(line) for line in r.stdout.splitlines() if line.startswith(b"{")]


def print_before_after(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> None:
    print("\nbefore -> after (same run)")
    old = {r["row"]: r for r in before}
    for r in after:
        b = old.get(r["row"])
        if b is None:
            continue
        for k in ("ours_ms", "p99_ms", "ours_jobs_per_s", "ratio", "worker_cpu_ms_per_job",
                  "client_cpu_ms_per_job"):
            if r.get(k) is not None and b.get(k) is not None:
                print(f"   {r['row']:16s} {k:24s} {b[k]:9.2f} -> {r[k]:9.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer samples (a smoke run)")
    ap.add_argument("--only", default="1,2,3,4", help="comma-separated benchmark numbers")
    ap.add_argument("--connections", type=int, default=1, help="benchmark 3: warm connections")
    ap.add_argument("--latency-n", type=int, default=None)
    ap.add_argument("--blob-mib", type=int, default=64)
    ap.add_argument("--json", action="store_true",
                    help="print one JSON line per row on stdout (the tables go to stderr)")
    ap.add_argument("--before", metavar="DIR", type=Path,
                    help="also run the rows against the sources in DIR (a checkout of an "
                         "earlier commit) first, and print before -> after")
    # internal roles
    ap.add_argument("--raw-server", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--load", metavar="PEER", help=argparse.SUPPRESS)
    ap.add_argument("--concurrency", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--jobs", type=int, default=100, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.raw_server:
        asyncio.run(raw_server_main())
        return
    if a.load:
        asyncio.run(load_main(a.load, a.concurrency, a.jobs, a.connections))
        return
    only = {int(x) for x in a.only.split(",") if x}
    if a.latency_n is None:
        a.latency_n = 200 if a.quick else 1000
    cold_runs = 5 if a.quick else 20
    plan = ([(1, 100), (8, 200), (64, 400)] if a.quick
            else [(1, 500), (8, 1500), (64, 3000)])
    blob_reps = 1 if a.quick else 3
    before = run_before(a, a.before) if a.before is not None else []
    rows: list[dict[str, Any]] = []
    with contextlib.redirect_stdout(sys.stderr if a.json else sys.stdout):
        print(f"plasmd benchmarks on {HOST}, {os.cpu_count()} cores"
              f"{' (--quick)' if a.quick else ''}; medians of interleaved runs, noisy machine")
        with tempfile.TemporaryDirectory(prefix="bench-plasmd-") as tmp:
            root = Path(tmp)
            res = asyncio.run(async_benches(root, a, only))
            if 1 in res:
                rows.append(latency_row(res[1]))
            if 2 in only:
                print_cold(bench_cold(root, cold_runs))
            if 3 in only:
                tp = bench_throughput(root, plan, a.connections)
                print_throughput(tp, a.connections)
                rows += throughput_rows(tp)
            if 4 in only:
                print_blob(asyncio.run(bench_blob(root, a.blob_mib, blob_reps)))
        if before:
            print_before_after(before, rows)
    if a.json:
        for row in rows:
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
