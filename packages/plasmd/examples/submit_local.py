"""Run a module on this machine and check its receipt.

    python submit_local.py HOME MODULE [STDIN-TEXT]

Through the home's plasmd when one runs (the local node API), else in this process
through plasm-exec's library, signed with the home's node key.
"""

from __future__ import annotations

import sys
from pathlib import Path

from plasmd.client import Client


def main(home: str, module: str, text: str = "Hello, World") -> int:
    result = Client(home).submit(Path(module), stdin=text.encode())
    body = result.verify()  # signature, job, module, stdin and output bytes
    print(result.stdout.decode())
    print(f"receipt verified: worker {body['worker']}, ended {result.ended}")
    return result.status


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
