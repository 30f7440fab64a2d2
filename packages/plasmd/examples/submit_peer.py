"""Send a job straight to a remote node over QUIC/Noise, no daemon involved.

    python submit_peer.py HOME MODULE NODE_ID@HOST:PORT

Signed with the home's node key; the node must run jobs from it (its keyring
lists the key as job-submitter, or it is open). The handshake proves NODE_ID.
"""

from __future__ import annotations

import sys
from pathlib import Path

from plasmd.client import Client


def main(home: str, module: str, peer: str) -> int:
    result = Client(home, mode="direct").submit(Path(module), stdin=b"Hello, World",
                                                peer=peer)
    result.verify(workers=[peer.split("@", 1)[0]])  # and it was that node
    print(result.stdout.decode())
    print("receipt verified")
    return result.status


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
