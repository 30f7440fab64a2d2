"""Run a job on any node that matches some capabilities, through the home's plasmd.

    python placement.py HOME MODULE RUNTIME NODE_ID@HOST:PORT...

The running plasmd asks each listed node for its signed node record and sends
the job to the first whose measured capabilities match (then to the next, if it
refuses); the worker checks the same requirements again from the manifest.
"""

from __future__ import annotations

import sys
from pathlib import Path

from plasmd.client import Client


def main(home: str, module: str, runtime: str, *peers: str) -> int:
    client = Client(home, mode="daemon")  # fail if no plasmd runs for the home
    result = client.submit(Path(module), stdin=b"Hello, World",
                           capabilities={"runtime": runtime},
                           discovery={"peers": list(peers), "via": "none"})
    result.verify()
    print(result.stdout.decode())
    print(f"ran on {result.worker}")
    return result.status


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
