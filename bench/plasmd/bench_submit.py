"""Cold and local ``plasmd submit``, each side by side with its reference in one run.

    .venv/bin/python bench/plasmd/bench_submit.py [--runs N] [--json]

Every command runs as a fresh process, and the commands of all rows are interleaved
(each round runs each once, in a rotating order); medians are reported, of the
wall-clock time (the goal) and of the process's CPU time (user + system, which a
loaded machine distorts less).

1. cold: ``plasmd submit hello.wasm --stdin=in.txt --peer=<worker>`` from a home
   with no daemon (import, QUIC + Noise handshake with a Retry, sign, offer, run,
   serve the module, result, verify the receipt, exit), against
   ``bench/plasmd/raw_oneshot.py`` (import aioquic, handshake, 1 KiB each way,
   CONNECTION_CLOSE, exit) talking to a raw aioquic echo server process (this
   script with ``--raw-server``). Goal <= 1.3x.
2. warm local: ``plasmd submit --peer=<the home's own node>`` from a home where a
   plasmd runs: the job goes over the control socket (docs/local-api.md) and the
   node runs it on itself (its warm executor, no QUIC hop); against a cold
   ``plasm-exec run hello.wasm`` (the module's compiled code cached). Goal <= 0.5x.
3. warm, to another node: the same, with ``--peer=<worker>``: the home's plasmd
   carries the job over its warm QUIC connection to the worker; the same
   reference and goal.

``--before BIN`` adds each row's command from another checkout's venv (its plasmd,
and for the warm rows a plasmd of its own started for another home), in the same
rounds: a change's before and after, side by side.

The worker is ``plasmd start --open`` on 127.0.0.1 in a throw-away home. Bytecode
caches are written first (PYTHONDONTWRITEBYTECODE is dropped), as for an installed
tool. The machine has 2 cores shared with other work: treat differences under
~15 % as noise and look at the load printed with the results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from procs import stop  # bench/plasmd/procs.py

ROOT = Path(__file__).resolve().parents[2]
HELLO = ROOT / "packages" / "plasm-exec" / "examples" / "build" / "hello.wasm"
BIN = Path(sys.executable).parent
RAW = Path(__file__).with_name("raw_oneshot.py")
EXPECT = b"dlroW ,olleH"
OUT = Path(tempfile.gettempdir())  # where each command's stdout and stderr go (main sets it)


def bench_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if k not in ("PYTHONDONTWRITEBYTECODE", "PHASE_HOME", "PHASE_LOG_FORMAT")}


def start(cmd: list[str], err: Path, env: dict[str, str] | None = None
          ) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=open(err, "wb"),
                            env={**bench_env(), **(env or {})})
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise SystemExit(f"{cmd[1]} did not start: {err.read_text()[-2000:]}")
    return proc, json.loads(line)


def node(root: Path, name: str, *flags: str, bin_dir: Path = BIN,
         env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    home = root / name
    subprocess.run([str(bin_dir / "plasmd"), "init", "-q", f"--home={home}",
                    "--listen=127.0.0.1:0"], env={**bench_env(), **(env or {})}, check=True)
    return start([str(bin_dir / "plasmd"), "start", f"--home={home}", *flags],
                 root / f"{name}.stderr", env)


def timed(cmd: list[str], expect: bytes, stdin: Path | None = None,
          env: dict[str, str] | None = None) -> tuple[float, float]:
    """(wall ms, CPU ms of the process: user + system, from the kernel).

    Started as a shell starts a command (``posix_spawn``, output to files, one
    ``wait4``), not through ``subprocess.run``: its pipes, reader threads and the
    fork of this process added 8-12 ms to every sample on the loaded machine, a
    constant that weighed most on the shortest command."""
    out, err = OUT / "stdout", OUT / "stderr"
    fds = [os.open(stdin or os.devnull, os.O_RDONLY),
           os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
           os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)]
    try:
        actions = [(os.POSIX_SPAWN_DUP2, fd, i) for i, fd in enumerate(fds)]
        t0 = time.perf_counter()
        pid = os.posix_spawnp(cmd[0], cmd, {**bench_env(), **(env or {})},
                              file_actions=actions)
        _, status, usage = os.wait4(pid, 0)
        dt = time.perf_counter() - t0
    finally:
        for fd in fds:
            os.close(fd)
    code = os.waitstatus_to_exitcode(status)
    if code != 0 or expect not in out.read_bytes():
        raise SystemExit(f"{' '.join(cmd)} failed ({code}): {err.read_bytes()[-1500:]!r}")
    return dt * 1000, (usage.ru_utime + usage.ru_stime) * 1000


# -- the raw aioquic echo server ------------------------------------------------------

async def raw_server_main() -> None:
    from aioquic.asyncio import serve
    from aioquic.asyncio.protocol import QuicConnectionProtocol
    from aioquic.quic import events
    from aioquic.quic.configuration import QuicConfiguration

    from phase_core.aio import certs

    cert = certs.make()
    cfg = QuicConfiguration(is_client=False, alpn_protocols=["echo"])
    cfg.certificate, cfg.private_key = cert.certificate, cert.private_key

    class Echo(QuicConnectionProtocol):
        bufs: dict[int, bytearray]

        def quic_event_received(self, event: Any) -> None:
            if isinstance(event, events.StreamDataReceived):
                buf = self.__dict__.setdefault("bufs", {}).setdefault(event.stream_id,
                                                                      bytearray())
                buf += event.data
                if event.end_stream:
                    self._quic.send_stream_data(event.stream_id, bytes(buf), end_stream=True)
                    self.transmit()

    server = await serve("127.0.0.1", 0, configuration=cfg, create_protocol=Echo)
    port = server._transport.get_extra_info("sockname")[1]
    sys.stdout.write(json.dumps({"port": port}) + "\n")
    sys.stdout.flush()
    stop_ev = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop_ev.set)
    await stop_ev.wait()
    server.close()


# -- the run ---------------------------------------------------------------------------

ROWS = {  # key: (row, measurement, reference key, reference, goal)
    "cold": ("cold plasmd submit", "cold plasmd submit --peer, no local daemon",
             "raw", "raw aioquic one-shot client", 1.3),
    "warm": ("warm local plasmd submit",
             "plasmd submit --peer=<the home's node> handed to the home's running plasmd",
             "exec", "cold plasm-exec run hello.wasm", 0.5),
    "remote": ("warm plasmd submit to another node",
               "plasmd submit --peer=<another node> handed to the home's running plasmd",
               "exec", "cold plasm-exec run hello.wasm", 0.5),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--json", action="store_true", help="one JSON line per row")
    ap.add_argument("--before", metavar="BIN", type=Path,
                    help="also time the plasmd of another checkout's venv (its bin/ "
                         "directory) on every row: the before of a change, same run")
    ap.add_argument("--raw-server", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.raw_server:
        asyncio.run(raw_server_main())
        return
    global OUT
    with tempfile.TemporaryDirectory(prefix="bench-submit-") as tmp:
        root = OUT = Path(tmp)
        procs = []
        try:
            worker, w = node(root, "worker", "--open")
            procs.append(worker)
            local, me = node(root, "local")  # a running node on the warm client's home
            procs.append(local)
            subprocess.run([str(BIN / "plasmd"), "init", "-q", f"--home={root / 'cold'}",
                            "--listen=127.0.0.1:0"], env=bench_env(), check=True)
            raw, r = start([sys.executable, __file__, "--raw-server"], root / "raw.stderr")
            procs.append(raw)
            stdin = root / "in.txt"
            stdin.write_bytes(b"Hello, World")
            cmds = {
                "cold": submit_cmd(BIN, root / "cold", stdin, w),
                "raw": ([sys.executable, str(RAW), str(r["port"])], b"ok", None),
                "warm": submit_cmd(BIN, root / "local", stdin, me),
                "remote": submit_cmd(BIN, root / "local", stdin, w),
                "exec": ([str(BIN / "plasm-exec"), "run", f"--home={root / 'cold'}",
                          str(HELLO)], EXPECT, stdin),
            }
            if a.before is not None:  # its bytecode goes to a cache of our own
                env = {"PYTHONPYCACHEPREFIX": str(root / "pycache")}
                old, old_me = node(root, "local-before", bin_dir=a.before, env=env)
                procs.append(old)
                cmds["cold:before"] = submit_cmd(a.before, root / "cold", stdin, w, env)
                cmds["warm:before"] = submit_cmd(a.before, root / "local-before", stdin,
                                                 old_me, env)
                cmds["remote:before"] = submit_cmd(a.before, root / "local-before", stdin,
                                                   w, env)
            times: dict[str, list[float]] = {k: [] for k in cmds}
            cpus: dict[str, list[float]] = {k: [] for k in cmds}
            for spec in cmds.values():  # bytecode, compile cache, warm connection
                timed(*spec)
                timed(*spec)
            order = list(cmds)
            for i in range(a.runs):
                for k in order[i % len(order):] + order[:i % len(order)]:
                    wall, cpu = timed(*cmds[k])
                    times[k].append(wall)
                    cpus[k].append(cpu)
        finally:
            for p in procs:
                stop(p)
    med = {k: statistics.median(v) for k, v in times.items()}
    cpu_med = {k: statistics.median(v) for k, v in cpus.items()}
    load = os.getloadavg()[0]
    if not a.json:
        print(f"{a.runs} interleaved runs, medians; load {load:.2f}")
        print(f"{'row':36} {'ours':>9} {'reference':>32} {'ref':>9} {'ratio':>6} goal")
    for ours in [k for k in cmds if k.split(":")[0] in ROWS]:
        key, _, before = ours.partition(":")
        row, measurement, ref, reference, goal = ROWS[key]
        if before:
            row, measurement = f"{row}, before", f"{measurement} ({a.before}/plasmd)"
        ratio = med[ours] / med[ref]
        rec = {"row": row, "measurement": measurement, "ours_ms": round(med[ours], 1),
               "reference": reference, "reference_ms": round(med[ref], 1),
               "ratio": round(ratio, 2), "goal": f"<= {goal}x", "met": ratio <= goal,
               "ours_cpu_ms": round(cpu_med[ours], 1),
               "reference_cpu_ms": round(cpu_med[ref], 1),
               "cpu_ratio": round(cpu_med[ours] / cpu_med[ref], 2)}
        if a.json:
            print(json.dumps(rec))
        else:
            print(f"{row:36} {med[ours]:7.1f}ms {reference:>32} {med[ref]:7.1f}ms "
                  f"{ratio:5.2f}x <= {goal}x {'met' if rec['met'] else 'NOT met'}"
                  f"   (CPU {cpu_med[ours]:.0f} / {cpu_med[ref]:.0f} ms = "
                  f"{rec['cpu_ratio']:.2f}x)")


def submit_cmd(bin_dir: Path, home: Path, stdin: Path, peer: dict[str, Any],
               env: dict[str, str] | None = None) -> tuple[Any, ...]:
    """``plasmd submit hello.wasm`` from ``home`` to the node ``peer`` started as."""
    to = f"{peer['node_id']}@{peer['listen'][0].removeprefix('quic://')}"
    return ([str(bin_dir / "plasmd"), "submit", str(HELLO), f"--stdin={stdin}",
             f"--peer={to}", f"--home={home}"], EXPECT, None, env)


if __name__ == "__main__":
    main()
