"""Field checks for the local node API's requests (docs/local-api.md,
docs/schemas/local-api/). Each failure is a ``bad_request`` (65) naming the field."""

from __future__ import annotations

from typing import Any

from phase_core.errors import InputError

MAX_STRING = 4096
MAX_ITEMS = 256
SUBMIT_KEYS = frozenset({"v", "type", "req", "module", "stdin", "args", "argv0", "env",
                         "limits", "deterministic", "where", "submitter", "manifest",
                         "progress"})
WHERE_CAPS_KEYS = frozenset({"capabilities", "peers", "via", "bootstrap", "interfaces",
                             "discover_timeout_ms", "include_self"})
CAPABILITY_KEYS = frozenset({"arch", "runtime", "memory_bytes"})
LIMIT_KEYS = ("memory_bytes", "fuel", "wall_ms", "output_bytes")


def bad(message: str, hint: str | None = None) -> InputError:
    return InputError(message, slug="bad_request",
                      hint=hint or "see docs/local-api.md for the request's fields")


def only(req: dict[str, Any], keys: frozenset[str], what: str) -> None:
    extra = sorted(set(req) - keys)
    if extra:
        raise bad(f"{what}: unknown field(s) {', '.join(extra)[:200]}")


def string(v: Any, what: str, cap: int = MAX_STRING) -> str:
    if not isinstance(v, str):
        raise bad(f"{what} must be a string")
    if len(v) > cap:
        raise InputError(f"{what} is over {cap} characters", slug="too_large")
    return v


def boolean(v: Any, what: str) -> bool:
    if not isinstance(v, bool):
        raise bad(f"{what} must be true or false")
    return v


def integer(v: Any, what: str, lo: int, hi: int) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise bad(f"{what} must be an integer from {lo} to {hi}")
    return v


def strings(v: Any, what: str) -> list[str]:
    if not isinstance(v, list):
        raise bad(f"{what} must be a list of strings")
    if len(v) > MAX_ITEMS:
        raise InputError(f"{what} has over {MAX_ITEMS} items", slug="too_large")
    return [string(x, f"{what}[{i}]") for i, x in enumerate(v)]


def env(v: Any) -> dict[str, str]:
    if not isinstance(v, dict):
        raise bad("env must be an object of NAME: VALUE strings")
    if len(v) > MAX_ITEMS:
        raise InputError(f"env has over {MAX_ITEMS} entries", slug="too_large")
    out = {}
    for k, val in v.items():
        if not (k and k.isascii() and (k[0].isalpha() or k[0] == "_")
                and all(c.isalnum() or c == "_" for c in k)):
            raise bad(f"env name {k[:40]!r} is not NAME ([A-Za-z_][A-Za-z0-9_]*)")
        out[string(k, "env name", 256)] = string(val, f"env.{k}")
    return out


def limits(v: Any) -> dict[str, int]:
    from phase_core.limits import DEFAULT_LIMITS

    out = dict(DEFAULT_LIMITS)
    if v is None:
        return out
    if not isinstance(v, dict):
        raise bad("limits must be an object")
    only(v, frozenset(LIMIT_KEYS), "limits")
    for k, val in v.items():
        out[k] = integer(val, f"limits.{k}", 65536 if k == "memory_bytes" else
                         0 if k == "output_bytes" else 1, 1 << 53)
    return out


def where(v: Any) -> dict[str, Any]:
    """``{"node": "self"}`` (the default), ``{"peer": …}`` or ``{"capabilities": …}``."""
    if v is None:
        return {"node": "self"}
    if not isinstance(v, dict):
        raise bad("where must be an object")
    if "node" in v:
        only(v, frozenset({"node"}), "where")
        if v["node"] != "self":
            raise bad('where.node must be "self"', hint='name other nodes with "peer"')
        return v
    if "peer" in v:
        only(v, frozenset({"peer"}), "where")
        string(v["peer"], "where.peer", 300)
        return v
    if "capabilities" in v:
        only(v, WHERE_CAPS_KEYS, "where")
        caps = v["capabilities"]
        if not isinstance(caps, dict):
            raise bad("where.capabilities must be an object")
        only(caps, CAPABILITY_KEYS, "where.capabilities")
        for k in ("arch", "runtime"):
            if k in caps:
                string(caps[k], f"where.capabilities.{k}", 64)
        if "memory_bytes" in caps:
            integer(caps["memory_bytes"], "where.capabilities.memory_bytes", 0, 1 << 53)
        for k in ("peers", "bootstrap", "interfaces"):
            if k in v and len(strings(v[k], f"where.{k}")) > 64:
                raise InputError(f"where.{k} has over 64 items", slug="too_large")
        if v.get("via", "both") not in ("mdns", "dht", "both", "none"):
            raise bad("where.via is mdns, dht, both or none")
        if "discover_timeout_ms" in v:
            integer(v["discover_timeout_ms"], "where.discover_timeout_ms", 1, 600_000)
        boolean(v.get("include_self", False), "where.include_self")
        return v
    raise bad('where is {"node": "self"}, {"peer": …} or {"capabilities": …}')


def requirements(w: dict[str, Any]) -> dict[str, Any] | None:
    """A capabilities placement becomes the manifest's requirements too, so the worker
    checks them against what it measured."""
    caps = w.get("capabilities")
    if not caps:
        return None
    return dict(caps)
