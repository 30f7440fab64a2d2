"""The reference for cold ``plasmd submit``: a one-shot raw aioquic client.

    python bench/plasmd/raw_oneshot.py PORT

Imports aioquic, connects to 127.0.0.1:PORT (the raw echo server of
bench_submit.py, ALPN "echo", no certificate check), sends 1 KiB on one stream
and reads the 1 KiB echo, sends CONNECTION_CLOSE without waiting out the closing
period, and exits the ordinary way. No Noise, no signing, no verification: the
floor any cold asyncio + QUIC client pays on this machine.
"""

import asyncio
import socket
import ssl
import sys

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

PAYLOAD = b"x" * 1024


async def main(port: int) -> None:
    # not aioquic's connect() context manager: leaving it (or the event loop
    # finalising it) waits out the closing period, which is what we measure away
    cfg = QuicConfiguration(is_client=True, alpn_protocols=["echo"],
                            verify_mode=ssl.CERT_NONE)
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    addr = ("127.0.0.1", port)
    transport, proto = await loop.create_datagram_endpoint(
        lambda: QuicConnectionProtocol(QuicConnection(configuration=cfg)), sock=sock)
    assert isinstance(proto, QuicConnectionProtocol)
    proto.connect(addr)
    await proto.wait_connected()
    reader, writer = await proto.create_stream()
    writer.write(PAYLOAD)
    writer.write_eof()
    got = await reader.read()
    assert got == PAYLOAD, len(got)
    proto.close()  # CONNECTION_CLOSE goes out now; the closing period is not waited
    proto.transmit()
    transport.close()
    sys.stdout.write("ok\n")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
