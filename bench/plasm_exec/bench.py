"""plasm-exec benchmarks, each side by side with its reference in one run, ratios printed.

    .venv/bin/python bench/plasm_exec/bench.py [--runs N] [--json] [--only-cold]
                                               [--before <checkout>] [--profile]

1. cold process: `plasm-exec run hello.wasm` (warm compile cache) and
   `plasm-exec run --receipt r.json hello.wasm` vs Node's WASI runner
   (wasi_runner.mjs) on the same module and stdin, runs interleaved, medians
   (wall time; CPU time of the child beside it). Goal ≤ 0.8 × Node for both.
   With ``--before <checkout>`` (a checkout of an older commit, e.g.
   ``git archive <commit> packages | tar -x -C /tmp/old``), the same two commands of
   that checkout's code run in the same interleaved rounds (same interpreter and
   site-packages; its sources first on PYTHONPATH, and ours the same way) for a
   before → after table. ``--profile`` adds the floor to the same rounds: ``python -c
   pass`` and a Python that imports wasmtime and leaves by ``os._exit``.
2. warm throughput through the library API (Executor.run), 1 and 2 threads, vs a bare
   wasmtime loop (new Store + WasiConfig + instantiate + _start). Goal ≥ 0.8 × bare.
3. compile cache: first load of a ~1-2 MB module vs a load from the disk cache.

``--json`` prints, instead of the tables, one JSON line per row of part 1:
``{"row", "measurement", "ours_ms", "reference", "reference_ms", "ratio", "goal", "met"}``.
"""

from __future__ import annotations

import json
import os
import resource
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
GOAL = 0.8
# the console script's body, for code that is not installed (the --before checkout)
LAUNCH = ("import sys; sys.argv[0] = 'plasm-exec'; "
          "from plasm_exec.cli import entry; sys.exit(entry())")


def _child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def once(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall ms, CPU ms) of one run of ``cmd`` (stdin: STDIN, stdout: discarded)."""
    c0, t0 = _child_cpu(), time.perf_counter()
    subprocess.run(cmd, input=STDIN, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env=env, check=False)
    return (time.perf_counter() - t0) * 1000, (_child_cpu() - c0) * 1000


def interleaved(cmds: dict[str, tuple[list[str], dict[str, str]]], runs: int
                ) -> dict[str, tuple[float, float, float]]:
    """Median wall ms, median CPU ms and least wall ms per command; each round runs
    every command once, in an order that rotates, so load changes hit all alike."""
    names = list(cmds)
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for r in range(runs):
        for n in names[r % len(names):] + names[:r % len(names)]:
            w, c = once(*cmds[n])
            wall[n].append(w)
            cpu[n].append(c)
    return {n: (statistics.median(wall[n]), statistics.median(cpu[n]), min(wall[n]))
            for n in names}


def _env(home: str, pythonpath: str | None = None) -> dict[str, str]:
    # An installed tool has bytecode caches; a dev shell with PYTHONDONTWRITEBYTECODE
    # would recompile every module on every start, so they are written once here.
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPATH")}
    env["PHASE_HOME"] = home
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return env


def _srcs(root: Path) -> str:
    return os.pathsep.join(str(root / "packages" / p / "src") for p in ("plasm-exec",
                                                                        "phase-core"))


def cold(runs: int, home: str, before: Path | None, profile: bool = False
         ) -> tuple[list[dict[str, object]], dict[str, tuple[float, float, float]]]:
    hello = str(BUILD / "hello.wasm")
    receipt = str(Path(home) / "r.json")
    env = _env(home)
    for tree in [ROOT] + ([before] if before else []):
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / "packages")],
                       env=env, check=False, stdout=subprocess.DEVNULL)
    script = Path(sys.executable).parent / "plasm-exec"
    exe = [str(script)] if script.exists() else [sys.executable, "-c", LAUNCH]
    cmds: dict[str, tuple[list[str], dict[str, str]]] = {
        "run": ([*exe, "run", hello], env),
        "run --receipt": ([*exe, "run", "--receipt", receipt, hello], env),
    }
    node = shutil.which("node")
    if node:
        cmds["node"] = ([node, "--no-warnings", str(HERE / "wasi_runner.mjs"), hello], env)
    if profile:  # the floor under a cold run: the interpreter, and loading wasmtime
        cmds["python -c pass"] = ([sys.executable, "-c", "pass"], env)
        cmds["python: import plasm_exec.capi, os._exit"] = (
            [sys.executable, "-c", "import os, plasm_exec.capi; os._exit(0)"], env)
        # what loading wasmtime cost through wasmtime-py, before plasm_exec.capi
        cmds["python: import wasmtime, os._exit"] = (
            [sys.executable, "-c", "import os, wasmtime; os._exit(0)"], env)
    if before:
        env_new, env_old = _env(home, _srcs(ROOT)), _env(home, _srcs(before))
        launch = [sys.executable, "-c", LAUNCH]
        cmds["after: run"] = ([*launch, "run", hello], env_new)
        cmds["before: run"] = ([*launch, "run", hello], env_old)
        cmds["after: run --receipt"] = ([*launch, "run", "--receipt", receipt, hello], env_new)
        cmds["before: run --receipt"] = ([*launch, "run", "--receipt", receipt, hello],
                                         env_old)
    for name, (cmd, e) in cmds.items():  # fill the compile cache, make the key, check
        p = subprocess.run(cmd, input=STDIN, capture_output=True, env=e, check=True)
        assert name.startswith("python") or p.stdout == b"dlroW ,olleH", (cmd, p.stderr)
    res = interleaved(cmds, runs)
    rows: list[dict[str, object]] = []
    if node:
        for name, what in (("run", "cold `plasm-exec run hello.wasm`"),
                           ("run --receipt", "cold `plasm-exec run --receipt r.json hello.wasm`")):
            ratio = res[name][0] / res["node"][0]
            rows.append({"row": f"plasm-exec cold {name}", "measurement": what,
                         "ours_ms": round(res[name][0], 1),
                         "reference": "Node 20 node:wasi runner (wasi_runner.mjs), same module",
                         "reference_ms": round(res["node"][0], 1), "ratio": round(ratio, 2),
                         "goal": "≤ 0.8×", "met": ratio <= GOAL})
    if before:
        for name in ("run", "run --receipt"):
            new, old = res[f"after: {name}"][0], res[f"before: {name}"][0]
            rows.append({"row": f"plasm-exec cold {name}: after ÷ before",
                         "measurement": f"cold `plasm-exec {name}` (this tree vs {before})",
                         "ours_ms": round(new, 1), "reference": f"the code at {before}",
                         "reference_ms": round(old, 1), "ratio": round(new / old, 2),
                         "goal": "—", "met": True})
    return rows, res


def import_profile(runs: int, home: str, receipt: bool) -> dict[str, float]:
    """Where a cold run's imports go: ``-X importtime`` of ``plasm-exec run``, the smallest
    self time of each module over ``runs`` runs, summed by group (ms)."""
    import re
    hello = str(BUILD / "hello.wasm")
    script = Path(sys.executable).parent / "plasm-exec"
    exe = [str(script)] if script.exists() else ["-c", LAUNCH]
    args = ["run", *(["--receipt", str(Path(home) / "rp.json")] if receipt else []), hello]
    best: dict[str, int] = {}
    ancestors: dict[str, tuple[str, ...]] = {}
    for _ in range(runs):
        p = subprocess.run([sys.executable, "-X", "importtime", *exe, *args], input=STDIN,
                           capture_output=True, env=_env(home), check=True)
        stack: list[tuple[int, str]] = []
        rows = []
        for ln in p.stderr.decode().splitlines():
            m = re.match(r"import time:\s+(\d+) \|\s+\d+ \|( *)(\S+)$", ln)
            if m:
                rows.append((len(m.group(2)), m.group(3), int(m.group(1))))
        for depth, name, us in reversed(rows):  # parents come after their children
            while stack and stack[-1][0] >= depth:
                stack.pop()
            ancestors.setdefault(name, tuple(n for _, n in stack))
            stack.append((depth, name))
            best[name] = min(best.get(name, us), us)
    code = ("import sys; a = set(sys.modules); import plasm_exec.capi; "
            "print(' '.join(sorted(set(sys.modules) - a)))")
    for_wasmtime = set(subprocess.run([sys.executable, "-c", code], capture_output=True,
                                      text=True, check=True).stdout.split())
    groups: dict[str, float] = {}
    for name, us in best.items():
        up = ancestors[name]
        top = up[0] if up else name
        g = ("wasmtime's binding (plasm_exec.capi) and the stdlib it imports"
             if name in for_wasmtime or "plasm_exec.capi" in up else
             "phase_core.*" if name.startswith("phase_core") else
             "plasm_exec.*" if name.startswith("plasm_exec") else
             "nacl (signing)" if name.startswith("nacl") else
             "interpreter start-up (site, encodings)" if top in ("site", "encodings")
             or name.startswith(("encodings", "_distutils")) else "other stdlib (ours only)")
        groups[g] = groups.get(g, 0) + us / 1000
    return groups


def print_cold(rows: list[dict[str, object]], res: dict[str, tuple[float, float, float]],
               runs: int) -> None:
    print(f"\n1. cold process, {runs} interleaved runs: median wall, median CPU of the "
          f"child, least wall (ms); load average {os.getloadavg()[0]:.1f}")
    for name, (w, c, least) in res.items():
        print(f"   {name:36s} {w:7.1f} wall {c:7.1f} CPU {least:7.1f} least")
    for r in rows:
        ok = "" if r["goal"] == "—" else ("  met" if r["met"] else "  NOT met")
        print(f"   {r['row']:46s} ratio {r['ratio']:.2f}  (goal {r['goal']}){ok}")
    if "node" in res:
        for name in ("run", "run --receipt"):
            print(f"   CPU ratio {name} / node = {res[name][1] / res['node'][1]:.2f}, "
                  f"least-wall ratio = {res[name][2] / res['node'][2]:.2f}")


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
    argv = sys.argv[1:]
    runs = int(argv[argv.index("--runs") + 1]) if "--runs" in argv else 30
    before = Path(argv[argv.index("--before") + 1]).resolve() if "--before" in argv else None
    with tempfile.TemporaryDirectory() as home:
        rows, res = cold(runs, home, before, "--profile" in argv)
        if "--json" in argv:
            for r in rows:
                print(json.dumps(r, ensure_ascii=False))
            return
        print_cold(rows, res, runs)
        if "--profile" in argv:
            for receipt in (False, True):
                name = "run --receipt" if receipt else "run"
                print(f"\n   imports of a cold `plasm-exec {name}` (least of {runs} runs, ms)")
                groups = import_profile(runs, home, receipt)
                for g, ms in sorted(groups.items(), key=lambda x: -x[1]):
                    print(f"   {g:44s} {ms:6.1f}")
                print(f"   {'all imports':44s} {sum(groups.values()):6.1f}")
        if "--only-cold" in argv:
            return
        warm(runs * 20, home)
        cache(home)


if __name__ == "__main__":
    main()
