import os

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


@pytest.mark.parametrize("text, key, expected", [
    ('workers = "two"\n', "workers", "an integer"),
    ("workers = true\n", "workers", "an integer"),
    ("queue = 1.5\n", "queue", "an integer"),
    ('open = "false"\n', "open", "true or false"),  # once silently read as True
    ('mdns = 0\n', "mdns", "true or false"),
    ('listen = "127.0.0.1:1"\n', "listen", "a list of strings"),
    ("bootstrap = [1, 2]\n", "bootstrap", "a list of strings"),
    ("boot_http = 8080\n", "boot_http", "a string"),
    ('mode = ["local"]\n', "mode", "a string"),
    ('ceilings = 5\n', "ceilings", "a table"),
    ('[ceilings]\nfuel = "lots"\n', "ceilings.fuel", "an integer"),
])
def test_a_value_of_the_wrong_type_names_the_file_key_and_type(tmp_path, text, key, expected):
    f = tmp_path / "config.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as e:
        load(f, env={})
    msg = str(e.value)
    assert str(f) in msg and f"{key} must be {expected}" in msg
    assert "invalid literal" not in msg and e.value.exit_code == 78


def test_bad_environment_and_range_errors_say_what_is_wrong(tmp_path):
    with pytest.raises(ConfigError, match="PHASE_WORKERS must be an integer, not 'two'"):
        load(None, env={"PHASE_WORKERS": "two"})
    f = tmp_path / "config.toml"
    f.write_text("workers = 0\n")
    with pytest.raises(ConfigError, match=f"workers must be between 1 and 256, not 0.*{f}"):
        load(f, env={})


def test_start_with_a_bad_config_exits_78_naming_file_and_key(tmp_path):
    import subprocess

    from tests.conftest import script
    from tests.plasmd.conftest import init_home

    home = tmp_path / "node"
    init_home(home)
    cfg = home / "config.toml"
    cfg.write_text(cfg.read_text().replace("workers = ", 'workers = "two"\n# was: '))
    r = subprocess.run([script("plasmd"), "start", f"--home={home}"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 78, r.stderr
    assert f"{cfg}: workers must be an integer, not 'two'" in r.stderr
    assert "invalid literal" not in r.stderr and r.stdout == ""


def test_job_processes_from_file_environment_and_the_default(tmp_path):
    from dataclasses import replace

    from plasmd.config import Config

    p = tmp_path / "c.toml"
    assert load(None, env={}).job_processes is True
    p.write_text("job_processes = false\n")
    assert load(p, env={}).job_processes is False
    assert load(p, env={"PHASE_JOB_PROCESSES": "true"}).job_processes is True
    assert load(None, env={"PHASE_JOB_PROCESSES": "0"}).job_processes is False
    assert load(None, env={"PHASE_JOB_PROCESSES": " Off "}).job_processes is False
    p.write_text('job_processes = "yes"\n')
    with pytest.raises(ConfigError, match="job_processes must be true or false"):
        load(p, env={})
    # written only when it is not the default, so an older plasmd (which refuses keys
    # it does not know) still starts on a home that a newer `plasmd init` made
    assert "job_processes" not in Config().to_toml()
    off = replace(Config(), job_processes=False)
    p.write_text(off.to_toml())
    assert load(p, env={}).job_processes is False


@pytest.mark.parametrize("name", ["PHASE_OPEN", "PHASE_JOB_PROCESSES"])
def test_a_switch_with_a_typo_is_refused_not_read_as_off(name):
    with pytest.raises(ConfigError, match=f"{name} must be on or off, not 'ture'"):
        load(None, env={name: "ture"})
    assert getattr(load(None, env={name: "yes"}), name[6:].lower()) is True
    assert getattr(load(None, env={name: "no"}), name[6:].lower()) is False


def test_a_switch_with_a_typo_stops_the_daemon_with_exit_78(tmp_path):
    import subprocess

    from tests.conftest import script
    from tests.plasmd.conftest import init_home

    home = tmp_path / "node"
    init_home(home)
    r = subprocess.run([script("plasmd"), "start", f"--home={home}"], capture_output=True,
                       text=True, timeout=60, env={**os.environ, "PHASE_JOB_PROCESSES": "flase"})
    assert r.returncode == 78, r.stderr
    assert "PHASE_JOB_PROCESSES must be on or off, not 'flase'" in r.stderr and r.stdout == ""
