from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A node started by `plasmd start` in a fresh home, for one test module."""
    from tests.plasmd.conftest import start_node

    n = start_node(tmp_path_factory.mktemp("php") / "node")
    try:
        yield n
    finally:
        assert n.stop() == 0
