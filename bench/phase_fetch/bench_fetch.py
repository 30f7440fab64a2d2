"""phase-fetch against the reference tools, side by side in one run.

1. Download over loopback HTTP from one server:
   phase-fetch get (hash while streaming, fsync, rename into the CAS)
   vs  curl -s -o FILE URL && sha256sum FILE.
2. Cache hit (re-hash on read): phase-fetch get on a blob already in the CAS
   vs  sha256sum FILE.

Every tool runs as a fresh process (startup included), interleaved, best of
--repeat runs. Ratios are throughput(phase-fetch) / throughput(reference);
the goal is >= 0.9 for both.

Usage: python bench/phase_fetch/bench_fetch.py [--size-mib=256] [--repeat=3]
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import os
import shutil
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


class Handler(http.server.BaseHTTPRequestHandler):
    """GET /sha256/<hex>: the file, with sendfile (so the server is never the bottleneck)."""

    protocol_version = "HTTP/1.1"
    blob: Path
    hex: str

    def do_GET(self) -> None:
        if self.path != f"/sha256/{self.hex}":
            self.send_error(404)
            return
        size = self.blob.stat().st_size
        self.send_response(200)
        self.send_header("Content-Length", str(size))
        self.send_header("Connection", "close")
        self.end_headers()
        with open(self.blob, "rb") as f:
            self.connection.sendfile(f)
        self.close_connection = True

    def log_message(self, *a: object) -> None:
        pass


def timed(cmd: list[str] | str, *, shell: bool = False) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, shell=shell, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mib", type=int, default=256, help="blob size (default 256)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per tool; best is kept")
    args = ap.parse_args()
    for tool in ("curl", "sha256sum"):
        if shutil.which(tool) is None:
            print(f"{tool} is needed for the comparison", file=sys.stderr)
            return 69
    fetch = [sys.executable, "-m", "phase_fetch"]
    with tempfile.TemporaryDirectory(prefix="phase-bench-") as d:
        tmp = Path(d)
        src = tmp / "blob"
        h = hashlib.sha256()
        with open(src, "wb") as f:
            for _ in range(args.size_mib):
                chunk = os.urandom(1 << 20)
                h.update(chunk)
                f.write(chunk)
        hexd = h.hexdigest()
        cid = "sha256:" + hexd
        size = src.stat().st_size
        Handler.blob, Handler.hex = src, hexd
        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}"
        print(f"blob: {args.size_mib} MiB, {args.repeat} runs each, best kept; python "
              f"{sys.version.split()[0]}, {os.cpu_count()} cpus", flush=True)

        t_curl, t_fetch, t_sum, t_hit, t_ossl = [], [], [], [], []
        has_openssl = shutil.which("openssl") is not None
        out = tmp / "curl.out"
        for _ in range(args.repeat):
            out.unlink(missing_ok=True)
            t_curl.append(timed(f"curl -s -o {out} {url}/sha256/{hexd} && sha256sum {out}",
                                shell=True))
            got = subprocess.run(["sha256sum", str(out)], capture_output=True, text=True,
                                 check=True).stdout.split()[0]
            assert got == hexd, "curl fetched the wrong bytes"
            cas = tmp / "cas"
            shutil.rmtree(cas, ignore_errors=True)
            t_fetch.append(timed([*fetch, "get", cid, f"--size={size}", f"--mirror={url}",
                                  f"--cas={cas}", "-q"]))
            t_sum.append(timed(["sha256sum", str(src)]))
            t_hit.append(timed([*fetch, "get", cid, f"--cas={cas}", "-q"]))
            if has_openssl:  # context: a SHA-256 that uses the CPU's SHA instructions
                t_ossl.append(timed(["openssl", "dgst", "-sha256", str(src)]))
        server.shutdown()

    mib = size / (1 << 20)

    def row(name: str, ts: list[float]) -> float:
        best = min(ts)
        print(f"  {name:<34} {best * 1000:8.0f} ms  {mib / best:8.0f} MiB/s")
        return best

    print("1. download over loopback HTTP (verification included)")
    a = row("curl -s -o + sha256sum", t_curl)
    b = row("phase-fetch get (CAS, fsync)", t_fetch)
    print(f"  ratio phase-fetch / curl+sha256sum: {a / b:.2f}  (goal >= 0.9)")
    print("2. cache hit (re-hash on read)")
    c = row("sha256sum FILE", t_sum)
    e = row("phase-fetch get (cache hit)", t_hit)
    print(f"  ratio phase-fetch / sha256sum:      {c / e:.2f}  (goal >= 0.9)")
    if t_ossl:
        o = row("(context) openssl dgst -sha256", t_ossl)
        print(f"  ratio phase-fetch / openssl dgst:   {o / e:.2f}  (not a goal; hashlib uses "
              "OpenSSL too)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
