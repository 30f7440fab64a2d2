import pytest

from phase_core.errors import ConfigError
from phase_core.trust import Keyring, format_entry

K1, K2 = "11" * 32, "22" * 32


def test_default_deny():
    kr = Keyring.parse(format_entry("a", K1, ["worker"]).encode())
    assert kr.allows(K1, "worker")
    assert not kr.allows(K1, "boot-signer")
    assert not kr.allows(K2, "worker")
    assert not Keyring().allows(K1, "worker")
    assert kr.threshold("worker") == 1


@pytest.mark.parametrize("text, why", [
    ('[keys.a]\nkey = "11"\nroles = []\n', "64 lowercase hex"),
    (f'[keys.a]\nkey = "{K1}"\nroles = ["admin"]\n', "roles must be"),
    (f'[keys.a]\nkey = "{K1}"\nroles = []\ncolor = 1\n', "unknown field"),
    ('[other]\n', "unknown section"),
    ('[thresholds]\nboot-signer = 0\n', "threshold"),
    ('[thresholds]\nboss = 2\n', "unknown role"),
    (f'[keys.a]\nkey = "{K1}"\n[keys.b]\nkey = "{K1}"\n', "also listed"),
    ('not toml [', "not valid TOML"),
])
def test_bad_keyrings_are_config_errors(text, why):
    with pytest.raises(ConfigError, match=why):
        Keyring.parse(text.encode())


def test_thresholds_and_names():
    text = "[thresholds]\nboot-signer = 2\n" + format_entry("x", K2, ["boot-signer"])
    kr = Keyring.parse(text.encode())
    assert kr.threshold("boot-signer") == 2
    assert kr.name_of(K2) == "x" and kr.name_of(K1) is None
