"""A boot provider (plasmd's HTTP provider) in its own process, for a network namespace.

    python -m tests.pipeline.provider_proc DIR

serves DIR/cas and DIR/manifests on 127.0.0.1 (a free port), prints
{"url": ...} on stdout, and stops when its stdin closes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from phase_core.cas import ContentStore
from plasmd.provider import serve


def main() -> None:
    root = Path(sys.argv[1])
    server = serve(ContentStore(root / "cas"), root / "manifests", "127.0.0.1", 0)
    print(json.dumps({"url": server.url}), flush=True)
    try:
        sys.stdin.read()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
