"""Editing a keyring: add (trust) or remove (untrust) one named key, safely.

Every edit reads the keyring, checks it (a broken file is refused and left
alone), changes one entry, writes it back as TOML (tomli-w) and checks the
result again before it replaces the file atomically, under a lock, so two
editors cannot lose each other's entries. Edits are idempotent: trusting the
same name, key and roles again changes nothing. The leading comment block of
the file is kept; other comments are not (the file is rewritten from its data).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from phase_core.errors import ConfigError, InputError
from phase_core.fsutil import locked, write_atomic
from phase_core.identity import check_node_id
from phase_core.oserrors import from_oserror
from phase_core.trust import MAX_KEYRING_BYTES, NAME_RE, ROLES, Keyring


class DuplicateKey(InputError):
    """The name or the key is already in the keyring with something else (exit 65)."""

    slug = "duplicate_key"


@dataclass(frozen=True)
class Edit:
    changed: bool
    action: str  # "added", "replaced", "removed", "unchanged" or "absent"
    names: tuple[str, ...] = ()  # entries removed (untrust) or overwritten (trust --replace)


def _read(path: Path) -> tuple[bytes, dict[str, Any]]:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_KEYRING_BYTES + 1)
    except FileNotFoundError:
        return b"", {}
    except OSError as e:
        raise from_oserror(e, path, "read the keyring") from None
    Keyring.parse(data, str(path))  # a broken keyring is never edited
    return data, tomllib.loads(data.decode("utf-8"))


def _header(data: bytes) -> str:
    """The comment lines (and blank lines) at the top of the file."""
    out = []
    for line in data.decode("utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            break
        out.append(line)
    while out and not out[-1].strip():
        out.pop()
    return "\n".join(out) + "\n\n" if out else ""


def render(doc: dict[str, Any], header: str = "") -> bytes:
    """The keyring TOML for ``doc`` (thresholds first, then the keys by name)."""
    ordered: dict[str, Any] = {}
    if doc.get("thresholds"):
        ordered["thresholds"] = dict(doc["thresholds"])
    keys = doc.get("keys") or {}
    if keys:
        ordered["keys"] = {n: {"key": e["key"], "roles": list(e.get("roles", []))}
                           for n, e in sorted(keys.items())}
    return (header + tomli_w.dumps(ordered)).encode()


def _write(path: Path, data: bytes, doc: dict[str, Any]) -> None:
    new = render(doc, _header(data))
    Keyring.parse(new, str(path))  # never write a keyring the tools would refuse
    write_atomic(path, new, mode=0o644)


def check_entry(name: str, key: str, roles: list[str]) -> None:
    check_node_id(key)
    if NAME_RE.fullmatch(name) is None:
        raise ConfigError(f"bad key name {name!r}: use 1-64 of A-Z a-z 0-9 . _ -")
    for r in roles:
        if r not in ROLES:
            raise ConfigError(f"unknown role {r!r}", hint=f"roles are {', '.join(ROLES)}")


def trust(path: Path, name: str, key: str, roles: list[str], *, replace: bool = False) -> Edit:
    """Add ``name`` = ``key`` with ``roles``; idempotent; a clash needs ``replace``."""
    path = Path(path)
    roles = list(dict.fromkeys(roles))
    check_entry(name, key, roles)
    with locked(path.with_name(path.name + ".lock")):
        data, doc = _read(path)
        keys: dict[str, Any] = doc.setdefault("keys", {})
        same_key = [n for n, e in keys.items() if e.get("key") == key and n != name]
        cur = keys.get(name)
        if cur is not None and cur.get("key") == key and set(cur.get("roles", [])) == set(roles) \
                and not same_key:
            return Edit(False, "unchanged")
        if not replace:
            if cur is not None:
                what = ("a different key" if cur.get("key") != key
                        else f"the roles {', '.join(cur.get('roles', [])) or '(none)'}")
                raise DuplicateKey(f"keyring {path} already has {name!r} with {what}",
                                   hint="pass --replace to overwrite it, or choose "
                                        "another --name", name=name, keyring=str(path))
            if same_key:
                raise DuplicateKey(f"keyring {path} already lists this key as "
                                   f"{same_key[0]!r}",
                                   hint="pass --replace to rename it, or `phase-key untrust "
                                        f"--name={same_key[0]}` first",
                                   name=same_key[0], keyring=str(path))
        for n in same_key:
            del keys[n]
        keys[name] = {"key": key, "roles": roles}
        _write(path, data, doc)
        action = "replaced" if cur is not None or same_key else "added"
        return Edit(True, action, tuple(same_key) + ((name,) if cur is not None else ()))


def untrust(path: Path, *, name: str | None = None, key: str | None = None) -> Edit:
    """Remove the entry called ``name`` (or holding ``key``); absent is not an error."""
    path = Path(path)
    with locked(path.with_name(path.name + ".lock")):
        data, doc = _read(path)
        keys: dict[str, Any] = doc.get("keys", {})
        gone = [n for n, e in keys.items() if n == name or (key and e.get("key") == key)]
        if not gone:
            return Edit(False, "absent")
        for n in gone:
            del keys[n]
        _write(path, data, doc)
        return Edit(True, "removed", tuple(gone))
