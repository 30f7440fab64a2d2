"""What to fetch (``Want``), what was fetched (``Fetched``), and checks on names and URLs.

Every check here runs before any I/O: a bad content id, a name with a path
separator or ``..``, or a mirror that is not http(s) is rejected with exit 65.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from phase_core.canonical import check_content_id, content_hex
from phase_core.errors import InputError, Malformed

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
MAX_URL_CHARS = 2048
MAX_MIRRORS = 32
PLACEHOLDERS = ("{id}", "{hex}", "{name}")


def check_name(value: object, what: str = "name") -> str:
    """A blob name usable as a file name: no path separator, no ``..``, no control bytes."""
    if not isinstance(value, str) or NAME_RE.fullmatch(value) is None or ".." in value:
        raise Malformed(f"{what} {repr(value)[:80]} is not a safe file name",
                        hint="use 1-128 of A-Z a-z 0-9 . _ -, starting with a letter or digit, "
                             "without '..' or '/'")
    return value


def check_size(value: object, what: str = "size") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise Malformed(f"{what} {repr(value)[:40]} is not a non-negative integer")
    return value


def check_mirror(value: object) -> str:
    """An http(s) URL, optionally a template with {id}, {hex} or {name}."""
    if not isinstance(value, str) or not value or len(value) > MAX_URL_CHARS:
        shown = redact(value)[:80] if isinstance(value, str) else repr(value)[:80]
        raise Malformed(f"mirror {shown!r} is not a URL of at most "
                        f"{MAX_URL_CHARS} characters")
    shown = redact(value)[:80]
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise Malformed(f"mirror {shown!r} contains whitespace or control characters")
    try:
        parts = urlsplit(value.replace("{", "").replace("}", ""))
    except ValueError:
        raise Malformed(f"mirror {shown!r} is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Malformed(f"mirror {shown!r} is not an http:// or https:// URL")
    return value


USERINFO_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#]*@")


def redact(url: str) -> str:
    """The URL for logs and records: no user:password@, no query string, no fragment.

    Presigned URLs carry their token in the query (``?X-Amz-Signature=...``), so
    the query is replaced by ``?REDACTED``. Works on any string, parseable or not.
    """
    url = USERINFO_RE.sub(r"\1", url)
    cut = min((i for i in (url.find("?"), url.find("#")) if i >= 0), default=-1)
    if cut < 0:
        return url
    return url[:cut] + ("?REDACTED" if url[cut] == "?" else "")


def blob_url(mirror: str, cid: str, name: str | None) -> str:
    """The URL of blob ``cid`` on ``mirror``.

    A mirror containing ``{id}``, ``{hex}`` or ``{name}`` is a template; any
    other mirror is a base URL and the blob is at ``<base>/sha256/<hex>``; a
    base URL's query string (a presigned token, say) stays after the new path, and
    a fragment, which is never sent, is dropped.
    """
    h = content_hex(cid)
    if any(p in mirror for p in PLACEHOLDERS):
        if "{name}" in mirror and name is None:
            raise InputError(f"mirror {redact(mirror)[:80]!r} needs a blob name, and {cid} "
                             "has none")
        return (mirror.replace("{id}", cid).replace("{hex}", h)
                .replace("{name}", name or ""))
    base, query = mirror.split("#", 1)[0], ""
    if "?" in base:
        base, query = base.split("?", 1)
        query = "?" + query
    return base.rstrip("/") + "/sha256/" + h + query


@dataclass(frozen=True)
class Want:
    """One blob to fetch. ``size`` is checked before any body byte when known."""

    id: str
    size: int | None = None
    mirrors: tuple[str, ...] = ()
    name: str | None = None

    def __post_init__(self) -> None:
        check_content_id(self.id)
        if self.size is not None:
            check_size(self.size)
        if self.name is not None:
            check_name(self.name)
        if len(self.mirrors) > MAX_MIRRORS:
            raise Malformed(f"{len(self.mirrors)} mirrors; at most {MAX_MIRRORS} are allowed")
        for m in self.mirrors:
            check_mirror(m)

    @classmethod
    def of(cls, cid: object, size: object = None, mirrors: Iterable[Any] = (),
           name: object = None) -> Want:
        return cls(check_content_id(cid), None if size is None else check_size(size),
                   tuple(mirrors), None if name is None else check_name(name))


@dataclass(frozen=True)
class Fetched:
    """A blob that is in the store and whose bytes hash to its id."""

    id: str
    size: int
    path: Path
    source: str

    def record(self, name: str | None = None, out: Path | None = None) -> dict[str, Any]:
        rec: dict[str, Any] = {"v": 1, "type": "blob", "id": self.id, "size_bytes": self.size,
                               "path": str(self.path), "source": self.source}
        if name is not None:
            rec["name"] = name
        if out is not None:
            rec["out"] = str(out)
        return rec
