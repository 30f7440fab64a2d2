import pytest

from phase_core.errors import ConfigError
from plasmd import capabilities
from plasmd.config import load


def test_precedence_flag_env_file_default(tmp_path):
    f = tmp_path / "config.toml"
    f.write_text('mode = "internet"\nworkers = 3\n[ceilings]\nfuel = 1000\n')
    cfg = load(f, env={})
    assert (cfg.mode, cfg.workers, cfg.ceilings["fuel"]) == ("internet", 3, 1000)
    cfg = load(f, env={"PHASE_MODE": "private", "PHASE_WORKERS": "5"})
    assert (cfg.mode, cfg.workers) == ("private", 5)
    cfg = load(f, env={"PHASE_MODE": "private"}, flags={"mode": "local", "open": None})
    assert cfg.mode == "local" and cfg.open is False
    assert load(None, env={}).mode == "local"


@pytest.mark.parametrize("text, why", [
    ('colour = "blue"\n', "unknown key"),
    ('mode = "cloud"\n', "mode"),
    ('listen = ["nowhere"]\n', "host:port"),
    ('[ceilings]\nmemory = 5\n', "unknown ceiling"),
    ('[ceilings]\nfuel = -1\n', "positive"),
    ("mode = \n", "not valid TOML"),
])
def test_bad_config(tmp_path, text, why):
    f = tmp_path / "c.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=why):
        load(f, env={})


def test_round_trip_to_toml(tmp_path):
    cfg = load(None, env={})
    f = tmp_path / "c.toml"
    f.write_text(cfg.to_toml())
    again = load(f, env={})
    assert (again.mode, again.listen, again.ceilings) == (cfg.mode, cfg.listen, cfg.ceilings)


def test_capabilities_are_measured_and_requirements_checked():
    caps = capabilities.measure()
    assert caps["cpu_cores"] >= 1 and caps["memory_bytes"] > 0
    assert caps["arch"] in ("x86_64", "aarch64")
    assert capabilities.unmet({}, caps) is None
    assert capabilities.unmet({"arch": "riscv64"}, caps) == "arch_mismatch"
    assert capabilities.unmet({"runtime": "wasmer"}, caps) == "runtime_not_supported"
    assert capabilities.unmet({"cpu_cores": 100_000}, caps) == "insufficient_resources"
    assert capabilities.unmet({"features": ["gpu"]}, caps) == "feature_not_supported"
