"""No ``asyncio.wait_for`` in the project's code.

On Python 3.11 a ``wait_for`` whose awaited work finishes in the same turn of the
loop as the task is cancelled returns the result and drops the cancellation. A loop
around one then keeps going after it was told to stop: ``plasmd submit --jobs`` hung
on Ctrl-C that way, because the Pool's sender never ended and ``close()`` waited for
it. ``async with asyncio.timeout(...)`` counts cancellations and lets an outside one
through; the project uses it everywhere instead.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def wait_for_calls(path: Path) -> list[int]:
    tree = ast.parse(path.read_text(), str(path))
    return [n.lineno for n in ast.walk(tree)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
            and n.func.attr == "wait_for" and isinstance(n.func.value, ast.Name)
            and n.func.value.id == "asyncio"]


def test_the_check_finds_a_wait_for(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import asyncio\nasync def f(x):\n    return await asyncio.wait_for(x, 1)\n")
    assert wait_for_calls(bad) == [3]


def test_no_package_uses_asyncio_wait_for() -> None:
    sources = sorted((ROOT / "packages").glob("*/src/**/*.py"))
    assert len(sources) > 100  # the packages are where they should be
    found = {str(p.relative_to(ROOT)): lines for p in sources if (lines := wait_for_calls(p))}
    assert found == {}, f"use asyncio.timeout, not asyncio.wait_for: {found}"
