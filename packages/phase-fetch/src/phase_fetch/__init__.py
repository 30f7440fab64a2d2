"""phase-fetch: verified, resumable content-addressed fetch.

Library API (what plasmd and the boot init call)::

    from phase_fetch import Fetcher, Options, Want
    with Fetcher(store, mirrors=[...], local_dirs=[...]) as f:
        got = f.fetch(Want("sha256:…", size=123, mirrors=("https://m/",)))
        got.path  # the verified blob in the CAS

Imports are lazy so that ``phase-fetch --help`` stays fast.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["Fetched", "Fetcher", "Options", "Sink", "Source", "Want", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("Fetcher", "Options"):
        from phase_fetch import fetcher
        return getattr(fetcher, name)
    if name in ("Want", "Fetched"):
        from phase_fetch import want
        return getattr(want, name)
    if name in ("Source", "Sink"):
        from phase_fetch import sources
        return getattr(sources, name)
    raise AttributeError(name)
