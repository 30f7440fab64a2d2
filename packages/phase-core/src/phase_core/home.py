"""Where state lives: one home directory (``PHASE_HOME``).

Resolution: an explicit path (flag) > ``$PHASE_HOME`` > ``$XDG_DATA_HOME/phase`` >
``~/.local/share/phase``. The daemon's system default is ``/var/lib/phase``.

Layout::

    <home>/key          node identity (0600)
    <home>/keyring.toml trusted keys
    <home>/cas/         content-addressed store
    <home>/state.json   rollback marks and seen jobs
    <home>/config.toml  configuration
"""

from __future__ import annotations

import os
from pathlib import Path

SYSTEM_HOME = Path("/var/lib/phase")


def resolve(explicit: str | os.PathLike[str] | None = None) -> Path:
    if explicit:
        return Path(explicit)
    env = os.environ.get("PHASE_HOME")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_DATA_HOME")
    if xdg:
        return Path(xdg) / "phase"
    return Path.home() / ".local" / "share" / "phase"


def key_path(home: Path) -> Path:
    return home / "key"


def keyring_path(home: Path) -> Path:
    return home / "keyring.toml"


def cas_path(home: Path) -> Path:
    return home / "cas"


def state_path(home: Path) -> Path:
    return home / "state.json"
