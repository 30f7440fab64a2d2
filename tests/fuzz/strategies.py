"""Shared strategies and the one property every parser must keep.

``clean(fn, *args)``: ``fn`` either returns or raises a ``PhaseError`` that is not
an ``InternalError`` (an internal error means a bug, exit 70). Anything else, a
``TypeError`` or ``KeyError`` say, fails the test: hostile input must get a clear
error with its exit code, never a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import strategies as st

from phase_core.errors import InternalError, PhaseError

T = TypeVar("T")
VECTORS = Path(__file__).resolve().parent.parent / "vectors"


def clean(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | PhaseError:
    try:
        return fn(*args, **kwargs)
    except InternalError:
        raise
    except PhaseError as e:
        assert e.slug and isinstance(e.message, str)
        return e


def vector(name: str) -> dict[str, Any]:
    return json.loads((VECTORS / name).read_text())


# Keys and strings that look like the real ones, so the fuzzers get past the first check.
FIELD_NAMES = ["v", "type", "body", "signatures", "key", "sig", "node_id", "addresses",
               "capabilities", "seq", "created", "expires", "module", "stdin", "argv",
               "env", "limits", "requirements", "nonce", "job", "worker", "id", "size",
               "offset", "records", "nodes", "more", "observed", "self", "target",
               "after", "record", "manifest", "receipt", "reason", "message", "error"]
TEXTS = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["", "job_manifest", "receipt", "node_record", "boot_manifest", "offer",
                     "run", "get", "blob", "ping", "dht_get", "dht_put", "dht_find_node",
                     "sha256:" + "0" * 64, "0" * 64, "a" * 128, "2030-01-01T00:00:00Z",
                     "127.0.0.1:4433", "phase/node/" + "0" * 64, "x\0y"]))
SCALARS = st.one_of(st.none(), st.booleans(),
                    st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1),
                    st.sampled_from([0, 1, -1, 2**53 - 1, 2**64, -(2**63)]), TEXTS)
KEYS = st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=8))
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(KEYS, inner, max_size=5)),
    max_leaves=20)
JSON_OBJECTS = st.dictionaries(KEYS, JSON_VALUES, max_size=6)


@st.composite
def mutated(draw: st.DrawFn, doc: Any) -> Any:
    """``doc`` with one value somewhere inside replaced by a random JSON value."""
    def paths(v: Any, prefix: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        out = [prefix]
        if isinstance(v, dict):
            for k, x in v.items():
                out += paths(x, (*prefix, k))
        elif isinstance(v, list):
            for i, x in enumerate(v):
                out += paths(x, (*prefix, i))
        return out
    doc = json.loads(json.dumps(doc))
    path = draw(st.sampled_from(paths(doc, ())))
    new = draw(JSON_VALUES)
    if not path:
        return new
    parent = doc
    for p in path[:-1]:
        parent = parent[p]
    if isinstance(parent, dict) and draw(st.booleans()):
        del parent[path[-1]]  # or drop the field
    else:
        parent[path[-1]] = new
    return doc
