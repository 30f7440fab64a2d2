"""Peers that never answer, for the deadline tests.

    python silent_peer.py quic   # completes the QUIC/Noise handshake, then never answers
    python silent_peer.py udp    # a UDP socket that swallows every datagram

Prints {"address": "127.0.0.1:PORT"} and runs until stdin closes.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys

from phase_core.aio.quic import listen
from phase_core.aio.stream import Stream
from phase_core.identity import Identity


async def quic() -> None:
    async def handler(peer_id: str, stream: Stream) -> None:
        await stream.recv()
        await asyncio.Event().wait()  # read the request, answer nothing, ever

    server = await listen("127.0.0.1", 0, Identity.generate(), handler)
    await serve_until_stdin_closes(server.port)


async def udp() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    loop.add_reader(sock.fileno(), lambda: sock.recv(65536))
    await serve_until_stdin_closes(sock.getsockname()[1])


async def serve_until_stdin_closes(port: int) -> None:
    sys.stdout.write(json.dumps({"address": f"127.0.0.1:{port}"}) + "\n")
    sys.stdout.flush()
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_reader(sys.stdin.fileno(), lambda: done.set() if not sys.stdin.read(1) else None)
    await done.wait()


if __name__ == "__main__":
    asyncio.run(quic() if sys.argv[1] == "quic" else udp())
