"""Our QUIC/Noise transport against raw aioquic, side by side, on 127.0.0.1.

    .venv/bin/python bench/transport/bench_transport.py [--rtt-n 1000] [--blob-mib 64]

1. Round trip of a 32-byte echo over a warm connection (p50 / p99):
   - raw aioquic: 32 bytes written and echoed on one long-lived stream;
   - ours, same shape: a control frame carrying 32 bytes, echoed on one stream;
   - ours, one stream per request (the protocol's normal shape).
2. A 64 MiB blob client → server, the server answering once it has it all:
   raw aioquic stream vs. our blob frame (read-driven flow control included).
Client and server share one process and one event loop (and the machine's cores).
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import statistics
import time
from typing import Any

from aioquic.asyncio.client import connect as raw_connect
from aioquic.asyncio.server import serve as raw_serve
from aioquic.quic.configuration import QuicConfiguration

from phase_core.aio import certs, quic
from phase_core.aio.stream import Limits, Stream
from phase_core.identity import Identity

HOST = "127.0.0.1"
PAYLOAD = b"p" * 32


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def fmt(xs: list[float]) -> str:
    return f"p50 {pct(xs, 50) * 1e6:7.0f} µs   p99 {pct(xs, 99) * 1e6:7.0f} µs"


# -- raw aioquic -------------------------------------------------------------

async def raw_server() -> tuple[Any, int]:
    cert = certs.make()
    cfg = QuicConfiguration(is_client=False, alpn_protocols=["bench/raw"],
                            max_data=16 << 20, max_stream_data=16 << 20)
    cfg.certificate, cfg.private_key = cert.certificate, cert.private_key

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        mode = await r.readexactly(1)
        if mode == b"E":
            while True:
                try:
                    data = await r.readexactly(32)
                except asyncio.IncompleteReadError:
                    break
                w.write(data)
        else:
            n = 0
            while chunk := await r.read(1 << 20):
                n += len(chunk)
            w.write(str(n).encode())
        w.write_eof()

    server = await raw_serve(HOST, 0, configuration=cfg,
                             stream_handler=lambda r, w: asyncio.ensure_future(handle(r, w)))
    return server, server._transport.get_extra_info("sockname")[1]


def raw_client_cfg() -> Any:
    return QuicConfiguration(is_client=True, alpn_protocols=["bench/raw"],
                             verify_mode=ssl.CERT_NONE, server_name="phase-node",
                             max_data=16 << 20, max_stream_data=16 << 20)


async def raw_rtt(port: int, n: int, warm: int) -> list[float]:
    async with raw_connect(HOST, port, configuration=raw_client_cfg()) as proto:
        r, w = await proto.create_stream()
        w.write(b"E")
        out = []
        for i in range(warm + n):
            t = time.perf_counter()
            w.write(PAYLOAD)
            await r.readexactly(32)
            if i >= warm:
                out.append(time.perf_counter() - t)
        w.write_eof()
        return out


async def raw_bulk(port: int, size: int) -> float:
    async with raw_connect(HOST, port, configuration=raw_client_cfg()) as proto:
        r, w = await proto.create_stream()
        chunk = b"b" * (1 << 20)
        t = time.perf_counter()
        w.write(b"S")
        for _ in range(size >> 20):
            w.write(chunk)
        w.write_eof()
        got = int(await r.read())
        dt = time.perf_counter() - t
        assert got == size, got
        return dt


# -- ours --------------------------------------------------------------------

async def our_handler(peer: str, stream: Stream) -> None:
    while (msg := await stream.recv()) is not None:
        if msg["type"] == "blob":
            n = 0
            async for chunk in stream.blob_chunks():
                n += len(chunk)
            await stream.send({"type": "got", "n": n})
        else:
            await stream.send(msg)


async def our_rtt(conn: quic.Connection, n: int, warm: int, per_request: bool) -> list[float]:
    msg = {"type": "echo", "p": PAYLOAD.decode()}
    out = []
    s = None if per_request else await conn.open_stream()
    for i in range(warm + n):
        t = time.perf_counter()
        if per_request:
            st = await conn.open_stream()
            await st.send(msg)
            st.finish()
            await st.recv()
        else:
            assert s is not None
            await s.send(msg)
            await s.recv()
        if i >= warm:
            out.append(time.perf_counter() - t)
    if s is not None:
        s.finish()
    return out


async def our_bulk(conn: quic.Connection, size: int) -> float:
    chunk = b"b" * (1 << 20)
    s = await conn.open_stream()
    t = time.perf_counter()
    await s.send({"type": "blob"})
    await s.send_blob_chunks(size, (chunk for _ in range(size >> 20)))
    reply = await s.recv()
    dt = time.perf_counter() - t
    assert reply == {"type": "got", "n": size}, reply
    s.finish()
    return dt


async def main(n: int, warm: int, blob_mib: int) -> None:
    size = blob_mib << 20
    rs, rport = await raw_server()
    server = await quic.listen(HOST, 0, Identity.generate(), our_handler)
    conn = await quic.connect(HOST, server.port, Identity.generate())
    try:
        print(f"32-byte echo over a warm connection, n={n} (after {warm} warm-up):")
        raw = await raw_rtt(rport, n, warm)
        ours = await our_rtt(conn, n, warm, per_request=False)
        ours_req = await our_rtt(conn, n, warm, per_request=True)
        print(f"  raw aioquic, one stream      {fmt(raw)}")
        print(f"  phase, one stream            {fmt(ours)}")
        print(f"  phase, one stream/request    {fmt(ours_req)}")
        print(f"  ratio phase/raw (one stream) p50 {pct(ours, 50) / pct(raw, 50):.2f}x   "
              f"p99 {pct(ours, 99) / pct(raw, 99):.2f}x")
        print(f"  ratio phase/raw (per request) p50 {pct(ours_req, 50) / pct(raw, 50):.2f}x   "
              f"p99 {pct(ours_req, 99) / pct(raw, 99):.2f}x")
        print(f"{blob_mib} MiB client → server:")
        t_raw = await raw_bulk(rport, size)
        t_ours = await our_bulk(conn, size)
        print(f"  raw aioquic stream  {t_raw:6.2f} s  {size / t_raw / 1e6:6.1f} MB/s")
        print(f"  phase blob frame    {t_ours:6.2f} s  {size / t_ours / 1e6:6.1f} MB/s")
        print(f"  ratio phase/raw time {t_ours / t_raw:.2f}x "
              f"(throughput {t_raw / t_ours:.2f}x of raw)")
        big = Limits(stream_window_bytes=16 << 20, connection_window_bytes=16 << 20,
                     send_buffer_bytes=16 << 20)
        server2 = await quic.listen(HOST, 0, Identity.generate(), our_handler, big)
        conn2 = await quic.connect(HOST, server2.port, Identity.generate(), limits=big)
        t_big = await our_bulk(conn2, size)
        await conn2.close()
        await server2.close()
        print(f"  phase, 16 MiB windows {t_big:6.2f} s  {size / t_big / 1e6:6.1f} MB/s  "
              f"({t_raw / t_big:.2f}x of raw; the raw run also uses 16 MiB windows)")
        print(f"  (median of RTT samples, raw {statistics.median(raw) * 1e6:.0f} µs)")
    finally:
        await conn.close()
        await server.close()
        rs.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--rtt-n", type=int, default=1000)
    ap.add_argument("--warm", type=int, default=50)
    ap.add_argument("--blob-mib", type=int, default=64)
    a = ap.parse_args()
    asyncio.run(main(a.rtt_n, a.warm, a.blob_mib))
