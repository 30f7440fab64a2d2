"""The trust keyring: named public keys with roles, and per-role thresholds.

A TOML file, read offline (no verification ever needs the network)::

    [thresholds]                # optional; the default for every role is 1
    boot-signer = 2

    [keys.release-1]
    key = "<64 hex: Ed25519 public key>"
    roles = ["boot-signer"]

Everything defaults to deny: a key that is not listed, or listed without the
role asked for, is not trusted for it. Unknown fields are errors.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from phase_core.errors import ConfigError, Malformed, MissingInput
from phase_core.identity import check_node_id
from phase_core.oserrors import from_oserror

ROLES = ("job-submitter", "boot-signer", "worker")
MAX_KEYRING_BYTES = 1 << 20
MAX_KEYS = 10_000
MAX_THRESHOLD = 16
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class TrustedKey:
    name: str
    key: str
    roles: frozenset[str]


@dataclass(frozen=True)
class Keyring:
    keys: dict[str, TrustedKey] = field(default_factory=dict)  # by hex key
    thresholds: dict[str, int] = field(default_factory=dict)
    source: str = "<empty keyring>"

    @classmethod
    def load(cls, path: Path) -> Keyring:
        path = Path(path)
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_KEYRING_BYTES + 1)
        except FileNotFoundError:
            raise MissingInput(f"no keyring at {path}") from None
        except OSError as e:  # unreadable (permissions, a directory, a disk error): 74
            raise from_oserror(e, path, "read the keyring") from None
        return cls.parse(data, str(path))

    @classmethod
    def parse(cls, data: bytes, source: str = "<keyring>") -> Keyring:
        if len(data) > MAX_KEYRING_BYTES:
            raise ConfigError(f"keyring {source} is over {MAX_KEYRING_BYTES} bytes")
        try:
            doc = tomllib.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"keyring {source} is not valid TOML: {e}") from None
        unknown = set(doc) - {"keys", "thresholds"}
        if unknown:
            raise ConfigError(f"keyring {source}: unknown section(s) {sorted(unknown)}",
                              hint="allowed: [keys.<name>], [thresholds]")
        thresholds: dict[str, int] = {}
        table = doc.get("thresholds", {})
        if not isinstance(table, dict):
            raise ConfigError(f"keyring {source}: [thresholds] must be a table of "
                              "role = number", hint='e.g. [thresholds] boot-signer = 2')
        for role, n in table.items():
            if role not in ROLES:
                raise ConfigError(f"keyring {source}: unknown role {role!r} in [thresholds]",
                                  hint=f"roles are {', '.join(ROLES)}")
            if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_THRESHOLD:
                raise ConfigError(f"keyring {source}: threshold for {role} must be an "
                                  f"integer from 1 to {MAX_THRESHOLD}")
            thresholds[role] = n
        entries = doc.get("keys", {})
        if not isinstance(entries, dict):
            raise ConfigError(f"keyring {source}: [keys] must be a table of named keys")
        if len(entries) > MAX_KEYS:
            raise ConfigError(f"keyring {source} lists more than {MAX_KEYS} keys")
        keys: dict[str, TrustedKey] = {}
        for name, entry in entries.items():
            where = f"keyring {source}: keys.{name}"
            if NAME_RE.fullmatch(name) is None:
                raise ConfigError(f"{where}: a name is 1-64 of A-Z a-z 0-9 . _ -")
            if not isinstance(entry, dict):
                raise ConfigError(f"{where} must be a table with key and roles")
            extra = set(entry) - {"key", "roles"}
            if extra:
                raise ConfigError(f"{where}: unknown field(s) {sorted(extra)}")
            try:
                key = check_node_id(entry.get("key"), "key")
            except Malformed as e:
                raise ConfigError(f"{where}: {e.message}") from None
            roles = entry.get("roles", [])
            if not isinstance(roles, list) or not all(r in ROLES for r in roles):
                raise ConfigError(f"{where}: roles must be a list drawn from {', '.join(ROLES)}")
            if key in keys:
                raise ConfigError(f"{where}: the same key is also listed as {keys[key].name}")
            keys[key] = TrustedKey(name, key, frozenset(roles))
        return cls(keys, thresholds, source)

    def name_of(self, key: str) -> str | None:
        tk = self.keys.get(key)
        return tk.name if tk else None

    def allows(self, key: str, role: str) -> bool:
        """True only if ``key`` is listed with ``role`` (default deny)."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        tk = self.keys.get(key)
        return tk is not None and role in tk.roles

    def threshold(self, role: str) -> int:
        return self.thresholds.get(role, 1)

    def with_key(self, name: str, key: str, roles: list[str]) -> Keyring:
        """A copy with one more key (for tools that trust a key given on the command line)."""
        keys = dict(self.keys)
        keys[check_node_id(key)] = TrustedKey(name, key, frozenset(roles))
        return Keyring(keys, dict(self.thresholds), self.source)


def format_entry(name: str, key: str, roles: list[str]) -> str:
    """A keyring TOML entry, for display (edit keyrings with ``phase-key trust``)."""
    from phase_core.trustedit import check_entry, render

    check_entry(name, key, roles)
    return render({"keys": {name: {"key": key, "roles": roles}}}).decode()
