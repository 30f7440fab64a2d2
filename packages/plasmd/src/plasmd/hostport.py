"""``host:port`` as config.toml and the command line spell it (imported by the
submit path without the rest of the config module)."""

from __future__ import annotations

from phase_core.errors import ConfigError


def parse_hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"address {text!r} is not host:port")
    host = host.strip("[]")
    try:
        p = int(port)
    except ValueError:
        raise ConfigError(f"address {text!r} has a bad port") from None
    if not 0 <= p <= 65535:
        raise ConfigError(f"address {text!r} has a port out of range")
    return host, p
