"""plasm-exec benchmarks, each side by side with its reference in one run, ratios printed.

    .venv/bin/python bench/plasm_exec/bench.py [--runs N]

1. cold process: `plasm-exec run hello.wasm` (warm compile cache) vs `python3 -c pass`
   vs Node's WASI runner (wasi_runner.mjs) on the same module and stdin. Goal ≤ 0.8 × Node.
2. warm throughput through the library API (Executor.run), 1 and 2 threads, vs a bare
   wasmtime loop (new Store + WasiConfig + instantiate + _start). Goal ≥ 0.8 × bare.
3. compile cache: first load of a ~1-2 MB module vs a load from the disk cache.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "packages" / "plasm-exec" / "examples" / "build"
HERE = Path(__file__).resolve().parent
STDIN = b"Hello, World"


def timed(cmd: list[str], runs: int, env: dict[str, str]) -> float:
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, input=STDIN, stdout=subprocess.DEVNULL, env=env, check=False)
        ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1000


def cold(runs: int, home: str) -> None:
    hello = str(BUILD / "hello.wasm")
    # An installed tool has bytecode caches; a dev shell with PYTHONDONTWRITEBYTECODE
    # would recompile every module on every start, so write them once here.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PHASE_HOME"] = home
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "packages")],
                   env=env, check=False, stdout=subprocess.DEVNULL)
    exe = [sys.executable, "-m", "plasm_exec", "run", hello]
    subprocess.run(exe, input=STDIN, capture_output=True, env=env, check=True)  # fill cache
    rows = [("plasm-exec run hello.wasm", timed(exe, runs, env)),
            ("python3 -c pass", timed([sys.executable, "-c", "pass"], runs, env))]
    node = shutil.which("node")
    if node:
        rows.append(("node wasi_runner.mjs hello.wasm",
                     timed([node, "--no-warnings", str(HERE / "wasi_runner.mjs"), hello],
                           runs, env)))
    print(f"\n1. cold process, median of {runs} runs")
    for name, ms in rows:
        print(f"   {name:36s} {ms:8.1f} ms")
    if node:
        print(f"   ratio plasm-exec / node = {rows[0][1] / rows[2][1]:.2f}  (goal <= 0.80)")
    print(f"   ratio plasm-exec / python -c pass = {rows[0][1] / rows[1][1]:.2f}")


def warm(runs: int, home: str) -> None:
    import wasmtime as wt

    from plasm_exec.api import Executor, RunSpec

    wasm = (BUILD / "hello.wasm").read_bytes()
    ex = Executor(Path(home))
    prog = ex.load(wasm)
    spec = RunSpec(argv=["hello"])

    def api_once() -> None:
        r = ex.run(prog, spec, stdin=STDIN)
        assert r.stdout == b"dlroW ,olleH", r

    cfg = wt.Config()
    cfg.consume_fuel = True
    cfg.epoch_interruption = True
    eng = wt.Engine(cfg)
    mod = wt.Module(eng, wasm)
    linker = wt.Linker(eng)
    linker.define_wasi()
    tmp = tempfile.mkdtemp()

    def bare_once() -> None:
        n = threading.get_ident()
        inp, out = f"{tmp}/in{n}", f"{tmp}/out{n}"
        with open(inp, "wb") as f:
            f.write(STDIN)
        store = wt.Store(eng)
        store.set_fuel(10**10)
        store.set_epoch_deadline(10**6)
        w = wt.WasiConfig()
        w.stdin_file, w.stdout_file, w.stderr_file = inp, out, "/dev/null"
        store.set_wasi(w)
        inst = linker.instantiate(store, mod)
        inst.exports(store)["_start"](store)
        with open(out, "rb") as f:
            assert f.read() == b"dlroW ,olleH"

    print(f"\n2. warm throughput, {runs} runs per thread (runs/s)")
    for threads in (1, 2):
        rates = {}
        for name, fn in (("bare wasmtime loop", bare_once), ("plasm-exec Executor.run", api_once)):
            for _ in range(20):
                fn()

            def loop(f=fn) -> None:
                for _ in range(runs):
                    f()
            ts = [threading.Thread(target=loop) for _ in range(threads)]
            t = time.perf_counter()
            for th in ts:
                th.start()
            for th in ts:
                th.join()
            rates[name] = runs * threads / (time.perf_counter() - t)
            print(f"   {threads} thread(s)  {name:26s} {rates[name]:9.0f} runs/s")
        ratio = rates["plasm-exec Executor.run"] / rates["bare wasmtime loop"]
        print(f"   {threads} thread(s)  ratio plasm-exec / bare = {ratio:.2f}  (goal >= 0.80)")
    shutil.rmtree(tmp, ignore_errors=True)


def cache(home: str) -> None:
    from plasm_exec.api import Executor

    big = BUILD / "big.wasm"
    if not big.exists():
        print("\n3. compile cache: examples/build/big.wasm missing, skipped")
        return
    wasm = big.read_bytes()
    h = Path(home) / "cachebench"
    t = time.perf_counter()
    Executor(h).load(wasm)
    first = (time.perf_counter() - t) * 1000
    t = time.perf_counter()
    Executor(h).load(wasm)
    cached = (time.perf_counter() - t) * 1000
    print(f"\n3. compile cache, {len(wasm):,} byte module (new Executor each time)")
    print(f"   first (compile + store)  {first:9.1f} ms")
    print(f"   cached (checked + load)  {cached:9.1f} ms")
    print(f"   ratio first / cached = {first / cached:.0f}x")


def main() -> None:
    runs = int(sys.argv[sys.argv.index("--runs") + 1]) if "--runs" in sys.argv else 30
    with tempfile.TemporaryDirectory() as home:
        cold(runs, home)
        warm(runs * 20, home)
        cache(home)


if __name__ == "__main__":
    main()
