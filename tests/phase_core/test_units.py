"""The shared duration and size spellings (phase_core.units) and the tools that use them."""

from __future__ import annotations

import pytest

from phase_core import units
from phase_core.errors import ConfigError, UsageError


@pytest.mark.parametrize(("text", "bare", "ms"), [
    ("30s", "s", 30_000), ("1500ms", "s", 1500), ("2m", "s", 120_000), ("1.5s", "s", 1500),
    ("1h", "s", 3_600_000), ("30", "s", 30_000), ("0.25", "s", 250), ("1500", "ms", 1500),
    (" 5 s ", "s", 5000), ("10MS", "s", 10), (45, "s", 45_000), (".5s", "s", 500),
])
def test_durations(text, bare, ms):
    assert units.parse_duration(text, "--timeout", bare=bare) == ms


@pytest.mark.parametrize(("text", "needle"), [
    ("0", "longer than zero"), ("0s", "longer than zero"), ("-1", "negative"),
    ("-5s", "negative"), ("abc", "must be a duration"), ("5x", "unknown unit"),
    ("nan", "must be a duration"), ("inf", "must be a duration"), ("1e3", "must be a duration"),
    ("0.0001s", "shorter than a millisecond"), ("", "must be a duration"),
    ("9" * 100, "must be a duration"), (True, "must be a duration"),
])
def test_bad_durations_are_usage_errors_that_name_the_option(text, needle):
    with pytest.raises(UsageError) as e:
        units.parse_duration(text, "--timeout")
    assert needle in e.value.message and "--timeout" in e.value.message
    assert e.value.exit_code == 64


def test_duration_zero_when_allowed_and_cap():
    assert units.parse_duration("0", "x", allow_zero=True) == 0
    with pytest.raises(UsageError, match="longer than the most allowed, 1h"):
        units.parse_duration("2h", "x", max_ms=3_600_000)


@pytest.mark.parametrize(("text", "size"), [
    ("256M", 256 << 20), ("64KiB", 64 << 10), ("1048576", 1 << 20), ("1.5G", 3 << 29),
    ("16m", 16 << 20), ("2KB", 2048), ("10B", 10), ("1T", 1 << 40), (4096, 4096),
    ("64 KiB", 64 << 10),
])
def test_sizes(text, size):
    assert units.parse_size(text, "--max-memory") == size


@pytest.mark.parametrize(("text", "needle"), [
    ("0", "more than zero"), ("-1M", "negative"), ("256Q", "unknown unit"),
    ("1.5", "whole number"), ("M", "must be a size"), ("0x10", "must be a size"),
    ("1ib", "unknown unit"), ("1i", "unknown unit"), ("2KiBB", "unknown unit"),
])
def test_bad_sizes(text, needle):
    with pytest.raises(UsageError) as e:
        units.parse_size(text, "--max-memory")
    assert needle in e.value.message


def test_config_readers_get_config_errors():
    with pytest.raises(ConfigError) as e:
        units.parse_size("lots", "config.toml: ceilings.memory_bytes", error=ConfigError)
    assert e.value.exit_code == 78 and "ceilings.memory_bytes" in e.value.message


def test_format_round_trips():
    for ms in (1, 1500, 30_000, 120_000, 3_600_000):
        assert units.parse_duration(units.format_ms(ms)) == ms
    for n in (1, 1000, 1024, 256 << 20, 1 << 40):
        assert units.parse_size(units.format_size(n)) == n
    assert (units.format_ms(30_000), units.format_size(256 << 20)) == ("30s", "256M")


def test_phase_key_manifest_takes_the_same_spellings(run_tool, tmp_path):
    from phase_core import keycli

    mod = tmp_path / "m.wasm"
    mod.write_bytes(b"\0asm\1\0\0\0")
    r = run_tool(keycli, ["manifest", f"--module={mod}", "--max-memory=64M",
                          "--timeout=1.5s", "--max-output=1K", "--lifetime=2m",
                          "--now=2026-01-01T00:00:00Z"])
    assert r.code == 0, r.err
    body = r.records[0]["body"]
    assert body["limits"]["memory_bytes"] == 64 << 20
    assert body["limits"]["wall_ms"] == 1500 and body["limits"]["output_bytes"] == 1024
    assert body["expires"] == "2026-01-01T00:02:00Z"
    old = run_tool(keycli, ["manifest", f"--module={mod}", "--timeout-ms=2500",
                            "--max-memory=1048576"])
    assert old.code == 0 and old.records[0]["body"]["limits"]["wall_ms"] == 2500
    for bad in ("--timeout=0", "--timeout=-1", "--max-memory=lots", "--lifetime=0s",
                "--max-memory=1K"):
        r = run_tool(keycli, ["manifest", f"--module={mod}", bad])
        assert r.code == 64, (bad, r.err)
        assert r.logs[-1]["error"] == "usage"


def test_plasm_exec_rejects_zero_and_negative_timeouts(run_tool):
    from plasm_exec import cli

    for bad in ("--timeout=0", "--timeout=-1", "--timeout=0ms", "--max-memory=12Q"):
        r = run_tool(cli, ["run", bad, "nosuch.wasm"])
        assert r.code == 64, (bad, r.err)
        assert r.logs[-1]["error"] == "usage" and "Traceback" not in r.err


def test_plasm_exec_limits_spellings():
    from plasm_exec.run import limits_from_args

    lim = limits_from_args({"--timeout": "2", "--max-memory": "64MiB", "--max-output": "0",
                            "--fuel": "5"})
    assert lim == {"wall_ms": 2000, "memory_bytes": 64 << 20, "output_bytes": 0, "fuel": 5}
    assert limits_from_args({"--timeout": "250ms"})["wall_ms"] == 250


def test_plasmd_config_ceilings_take_sizes_and_durations(tmp_path):
    from plasmd import config

    f = tmp_path / "config.toml"
    f.write_text('[ceilings]\nmemory_bytes = "64M"\nwall_ms = "2m"\noutput_bytes = 1024\n')
    cfg = config.load(f, env={})
    assert cfg.ceilings["memory_bytes"] == 64 << 20 and cfg.ceilings["wall_ms"] == 120_000
    f.write_text('[ceilings]\nwall_ms = "soon"\n')
    with pytest.raises(ConfigError) as e:
        config.load(f, env={})
    assert str(f) in e.value.message and "ceilings.wall_ms" in e.value.message


@pytest.mark.parametrize("text", ["٣s", "３0s", "²"])
def test_only_ascii_digits_are_numbers(text):
    # float() and str.isdigit() accept other scripts' digits; other implementations
    # of these spellings would not, so neither do we
    with pytest.raises(UsageError):
        units.parse_duration(text, "--timeout")
    with pytest.raises(UsageError):
        units.parse_size(text, "--max-memory")
