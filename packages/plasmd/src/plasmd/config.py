"""plasmd configuration: TOML file, PHASE_* environment, flags.

Precedence: flag > environment > file > default. Unknown keys and values of the
wrong type are errors (78) that name the file, the key and the type expected.

    mode = "local"                 # internet | local | private
    listen = ["127.0.0.1:4433"]
    open = false                   # run jobs from any submitter (default: keyring only)
    workers = 2                    # guests that run at once
    job_processes = true           # each guest slot runs its guests in a child process
                                   # (false: on threads of the node's own process)
    queue = 64                     # jobs waiting beyond the workers; then reject(queue_full)
    bootstrap = []                 # internet mode: DHT peers to join through ("host:port")
    mdns = true                    # advertise on mDNS (internet and local modes)
    mdns_interfaces = []           # interface names; empty: those that carry a listen
                                   # address (0.0.0.0: every up, non-loopback one;
                                   # a loopback-only node advertises nowhere)
    boot_http = ""                 # host:port to serve boot artifacts over HTTP ("" = off)
    control_group = ""             # a group whose members may use the control socket
                                   # (the local node API, docs/local-api.md); "" = none

    [ceilings]                     # the most any job may ask for; larger asks are clamped
    memory_bytes = 268435456       # or a size: "256M"; wall_ms also "30s" (docs/conventions.md)
    fuel = 10000000000
    wall_ms = 30000
    output_bytes = 16777216
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from phase_core import units
from phase_core.errors import ConfigError
from phase_core.limits import DEFAULT_LIMITS
from plasmd.hostport import parse_hostport

__all__ = ["Config", "load", "parse_hostport"]

MODES = ("internet", "local", "private")
KEYS = {"mode", "listen", "open", "workers", "job_processes", "queue", "ceilings",
        "bootstrap", "mdns", "mdns_interfaces", "boot_http", "control_group"}
DEFAULT_LISTEN = ("127.0.0.1:4433",)
MAX_CONFIG_BYTES = 1 << 20
# each key's TOML type: str, bool, int, a list of strings, or a table (ceilings)
TYPES: dict[str, Any] = {"mode": str, "listen": list, "open": bool, "workers": int,
                         "job_processes": bool,
                         "queue": int, "ceilings": dict, "bootstrap": list, "mdns": bool,
                         "mdns_interfaces": list, "boot_http": str, "control_group": str}
TYPE_NAMES = {str: "a string", bool: "true or false", int: "an integer",
              list: "a list of strings", dict: "a table"}


def _typed(path: Path, key: str, value: Any, want: Any) -> None:
    """Raise a ConfigError naming the file, the key and the type it needs."""
    ok = isinstance(value, want) and not (want is int and isinstance(value, bool))
    if ok and want is list:
        ok = all(isinstance(x, str) for x in value)
    if not ok:
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        raise ConfigError(f"{path}: {key} must be {TYPE_NAMES[want]}, not {shown}",
                          hint=f"e.g. {key} = {EXAMPLES[want]}")


EXAMPLES = {str: '"text"', bool: "true", int: "4", list: '["a", "b"]', dict: "[table]"}


@dataclass(frozen=True)
class Config:
    mode: str = "local"
    listen: tuple[str, ...] = DEFAULT_LISTEN
    open: bool = False
    workers: int = max(1, min(os.cpu_count() or 1, 8))
    job_processes: bool = True
    queue: int = 64
    ceilings: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_LIMITS))
    bootstrap: tuple[str, ...] = ()
    mdns: bool = True
    mdns_interfaces: tuple[str, ...] = ()
    boot_http: str = ""
    control_group: str = ""
    source: str = "defaults"

    def to_toml(self) -> str:
        def strings(xs: tuple[str, ...]) -> str:
            return "[" + ", ".join(f'"{a}"' for a in xs) + "]"

        ceil = "\n".join(f"{k} = {v}" for k, v in self.ceilings.items())
        return (f'mode = "{self.mode}"\nlisten = {strings(self.listen)}\n'
                f"open = {str(self.open).lower()}\n"
                f"workers = {self.workers}\n"
                # only when not the default: a plasmd from before the key can still
                # start on a home that a newer `plasmd init` made
                + ("" if self.job_processes else "job_processes = false\n")
                + f"queue = {self.queue}\n"
                f"bootstrap = {strings(self.bootstrap)}\nmdns = {str(self.mdns).lower()}\n"
                f"mdns_interfaces = {strings(self.mdns_interfaces)}\n"
                f'boot_http = "{self.boot_http}"\n'
                + (f'control_group = "{self.control_group}"\n' if self.control_group else "")
                + f"\n[ceilings]\n{ceil}\n")


def _check(cfg: Config) -> Config:
    if cfg.mode not in MODES:
        raise ConfigError(f"mode {cfg.mode!r} is not one of {', '.join(MODES)}")
    for a in (*cfg.listen, *cfg.bootstrap, *([cfg.boot_http] if cfg.boot_http else [])):
        parse_hostport(a)
    where = f" (config: {cfg.source}, PHASE_* environment, flags)"
    if not 1 <= cfg.workers <= 256:
        raise ConfigError(f"workers must be between 1 and 256, not {cfg.workers}{where}")
    if not 0 <= cfg.queue <= 100_000:
        raise ConfigError(f"queue must be between 0 and 100000, not {cfg.queue}{where}")
    unknown = set(cfg.ceilings) - set(DEFAULT_LIMITS)
    if unknown:
        raise ConfigError(f"unknown ceiling(s) {sorted(unknown)}",
                          hint=f"ceilings are {', '.join(DEFAULT_LIMITS)}")
    for k, v in list(cfg.ceilings.items()):
        if isinstance(v, str) and k != "fuel":  # "256M", "30s" (units.py spellings)
            where = f"{cfg.source}: ceilings.{k}"
            v = cfg.ceilings[k] = (units.parse_size(v, where, error=ConfigError)
                                   if k.endswith("_bytes") else
                                   units.parse_duration(v, where, bare="ms", error=ConfigError))
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ConfigError(f"{cfg.source}: ceilings.{k} must be a positive integer")
    return cfg


SWITCH_ON = ("1", "true", "yes", "on")
SWITCH_OFF = ("0", "false", "no", "off")


def _env_switch(env: dict[str, str], name: str) -> bool:
    """A PHASE_* switch: 1, true, yes or on (any case) is on; 0, false, no or off is
    off; anything else is refused, so that a typo does not silently mean off."""
    value = env[name].strip().lower()
    if value in SWITCH_ON or value in SWITCH_OFF:
        return value in SWITCH_ON
    raise ConfigError(f"{name} must be on or off, not {env[name][:40]!r}",
                      hint=f"on: {', '.join(SWITCH_ON)}; off: {', '.join(SWITCH_OFF)}")


def load(path: Path | None, env: dict[str, str] | None = None,
         flags: dict[str, Any] | None = None) -> Config:
    cfg = Config()
    if path is not None and Path(path).exists():
        try:
            with open(path, "rb") as f:
                raw = f.read(MAX_CONFIG_BYTES + 1)
        except OSError as e:
            raise ConfigError(f"cannot read {path}: {e.strerror}") from None
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path} is over {MAX_CONFIG_BYTES} bytes; not a config file?")
        try:
            doc = tomllib.loads(raw.decode())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path} is not valid TOML: {e}") from None
        unknown = set(doc) - KEYS
        if unknown:
            raise ConfigError(f"{path}: unknown key(s) {sorted(unknown)}",
                              hint=f"known keys: {', '.join(sorted(KEYS))}")
        for key, value in doc.items():
            _typed(path, key, value, TYPES[key])
        for key, value in doc.get("ceilings", {}).items():
            if key in DEFAULT_LIMITS and not (isinstance(value, str) and key != "fuel"):
                _typed(path, f"ceilings.{key}", value, int)  # or "256M" / "30s"
        ceilings = dict(cfg.ceilings)
        ceilings.update(doc.get("ceilings", {}))
        cfg = replace(cfg, mode=doc.get("mode", cfg.mode),
                      listen=tuple(doc.get("listen", cfg.listen)),
                      open=doc.get("open", cfg.open),
                      workers=doc.get("workers", cfg.workers),
                      job_processes=doc.get("job_processes", cfg.job_processes),
                      queue=doc.get("queue", cfg.queue), ceilings=ceilings,
                      bootstrap=tuple(doc.get("bootstrap", cfg.bootstrap)),
                      mdns=doc.get("mdns", cfg.mdns),
                      mdns_interfaces=tuple(doc.get("mdns_interfaces", cfg.mdns_interfaces)),
                      boot_http=doc.get("boot_http", cfg.boot_http),
                      control_group=doc.get("control_group", cfg.control_group),
                      source=str(path))
        try:
            _check(cfg)  # the file alone: its errors name it
        except ConfigError as e:
            if str(path) not in e.message:
                e.message = f"{path}: {e.message}"
            raise
    env = dict(os.environ) if env is None else env
    if env.get("PHASE_WORKERS") and not re.fullmatch(r"[0-9]{1,6}", env["PHASE_WORKERS"].strip()):
        raise ConfigError(f"PHASE_WORKERS must be an integer, not {env['PHASE_WORKERS'][:40]!r}")
    try:
        if env.get("PHASE_MODE"):
            cfg = replace(cfg, mode=env["PHASE_MODE"])
        if env.get("PHASE_LISTEN"):
            cfg = replace(cfg, listen=tuple(a.strip() for a in env["PHASE_LISTEN"].split(",")))
        if env.get("PHASE_OPEN"):
            cfg = replace(cfg, open=_env_switch(env, "PHASE_OPEN"))
        if env.get("PHASE_WORKERS"):
            cfg = replace(cfg, workers=int(env["PHASE_WORKERS"]))
        if env.get("PHASE_JOB_PROCESSES"):
            cfg = replace(cfg, job_processes=_env_switch(env, "PHASE_JOB_PROCESSES"))
        if env.get("PHASE_BOOTSTRAP"):
            cfg = replace(cfg, bootstrap=tuple(a.strip() for a in
                                               env["PHASE_BOOTSTRAP"].split(",") if a.strip()))
    except ValueError as e:
        raise ConfigError(f"bad PHASE_* environment value: {e}") from None
    for k, v in (flags or {}).items():
        if v is not None:
            cfg = replace(cfg, **{k: v})
    return _check(cfg)
