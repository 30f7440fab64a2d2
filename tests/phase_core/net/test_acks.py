"""ACKs with nothing to ride on wait a little (``quic.ACK_DELAY_S``) or until
``quic.ACK_EVERY`` datagrams arrived: a receiver that only reads sends a fraction of
the ACK-only datagrams aioquic's 1 ms delay would, and every byte is still
acknowledged (a writer waiting for its last ACK is not left hanging)."""

from __future__ import annotations

import asyncio
from typing import Any

from phase_core.aio import quic
from phase_core.aio.stream import Stream
from phase_core.identity import Identity
from tests.phase_core.net.conftest import HOST, eventually, run

FRAMES = 60
PAD = "x" * 1000  # one frame per datagram


def test_a_reader_acknowledges_many_datagrams_with_few_acks() -> None:
    async def handler(peer: str, stream: Stream) -> None:
        await stream.recv()
        for i in range(FRAMES):  # one datagram each, spaced: each would get its own ACK
            await stream.send({"type": "n", "i": i, "pad": PAD})
            await asyncio.sleep(0.002)

    async def main() -> tuple[int, int]:
        si, ci = Identity.generate(), Identity.generate()
        server = await quic.listen(HOST, 0, si, handler)
        try:
            conn = await quic.connect(HOST, server.port, ci)
            proto: Any = conn._proto
            assert proto._quic._ack_delay == quic.ACK_DELAY_S
            sent = [0]
            transport = proto._transport
            orig = transport.sendto

            def counting(data: bytes, addr: Any = None) -> None:
                sent[0] += 1
                orig(data, addr) if addr is not None else orig(data)

            transport.sendto = counting
            got = 0
            async with await conn.open_stream() as s:
                await s.send({"type": "go"})
                before = sent[0]
                while (msg := await s.recv()) is not None:
                    assert msg["i"] == got
                    got += 1
                acks = sent[0] - before
            # the server's handler ends only once every byte it sent was acknowledged
            await eventually(lambda: server._ep.active_streams == 0)
            conn.close_now()
            return got, acks
        finally:
            await server.close()

    got, acks = run(main())
    assert got == FRAMES
    assert 1 <= acks <= FRAMES // 2, acks  # aioquic alone: about one per datagram
