"""Run several jobs at once from an asyncio program, with progress.

    python submit_async.py HOME MODULE WORD...

One job per WORD, all in flight together; each prints its output and how it
went. Without a running plasmd the jobs run in this process instead.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from plasmd.client import Client, Result


async def main(home: str, module: str, words: list[str]) -> int:
    client = Client(home)
    stages: list[str] = []

    def progress(rec: dict[str, Any]) -> None:
        stages.append(rec.get("stage", rec["type"]))

    results: list[Result] = await asyncio.gather(*(
        client.submit_async(Path(module), stdin=w.encode(), on_progress=progress)
        for w in words))
    for word, r in zip(words, results, strict=True):
        r.verify()
        print(f"{word} -> {r.stdout.decode()} (exit {r.status}, worker {r.worker[:16]})")
    print(f"progress records: {len(stages)}")
    return max(r.status for r in results)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3:])))
