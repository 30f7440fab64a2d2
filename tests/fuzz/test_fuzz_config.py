"""Fuzz: the keyring and plasmd's config, both TOML files an operator edits."""

from __future__ import annotations

import json

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from phase_core.trust import ROLES, Keyring
from tests.fuzz.strategies import VECTORS, clean

GOOD_KEY = "0" * 63 + "1"


def _toml_string(s: str) -> str:
    return json.dumps(s)  # a JSON string (with \uXXXX escapes) is a TOML basic string


TOML_SCALARS = st.one_of(
    st.integers(-(2**63), 2**63 - 1).map(str), st.booleans().map(lambda b: str(b).lower()),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.text(max_size=12).map(_toml_string),
    st.sampled_from(['"job-submitter"', '"boot-signer"', '"worker"', f'"{GOOD_KEY}"',
                     '"127.0.0.1:4433"', '"local"', "1979-05-27T07:32:00Z", "1", "0"]))
TOML_VALUES = st.recursive(
    TOML_SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]"),
        st.dictionaries(st.from_regex(r"[a-z_]{1,8}", fullmatch=True), inner, max_size=3)
        .map(lambda d: "{" + ", ".join(f"{k} = {v}" for k, v in d.items()) + "}")),
    max_leaves=6)


@st.composite
def keyring_toml(draw: st.DrawFn) -> str:
    lines = []
    for section in draw(st.lists(st.sampled_from(["thresholds", "keys", "other"]),
                                 unique=True, max_size=3)):
        if draw(st.integers(0, 3)) == 0:  # the section's name bound to a plain value
            lines.insert(0, f"{section} = {draw(TOML_VALUES)}")
        elif section == "thresholds":
            lines.append("[thresholds]")
            for _ in range(draw(st.integers(0, 2))):
                role = draw(st.one_of(st.sampled_from(ROLES), st.just("nobody")))
                lines.append(f'"{role}" = {draw(TOML_VALUES)}')
        elif section == "keys":
            for i in range(draw(st.integers(0, 3))):
                name = draw(st.one_of(st.just(f"k{i}"), st.text(min_size=1, max_size=8)))
                lines.append(f"[keys.{_toml_string(name)}]")
                for field in draw(st.lists(st.sampled_from(["key", "roles", "extra"]),
                                           unique=True, max_size=3)):
                    lines.append(f"{field} = {draw(TOML_VALUES)}")
        else:
            lines.append(f"[{section}]")
    return "\n".join(lines) + "\n"


def test_the_vector_keyring_parses():
    kr = Keyring.parse((VECTORS / "keyring.toml").read_bytes())
    assert kr.threshold("boot-signer") == 2


@given(keyring_toml())
@example("thresholds = 3\n")
def test_keyring_toml(text):
    clean(Keyring.parse, text.encode())


@given(st.binary(max_size=300))
def test_keyring_bytes(data):
    clean(Keyring.parse, data)


# -- plasmd's config -----------------------------------------------------------------------
config = pytest.importorskip("plasmd.config")
CONFIG_KEYS = sorted(config.KEYS)


@st.composite
def config_toml(draw: st.DrawFn) -> str:
    keys = draw(st.lists(st.sampled_from([*CONFIG_KEYS, "unknown"]), unique=True,
                         max_size=4))
    return "".join(f"{k} = {draw(TOML_VALUES)}\n" for k in keys)


def _load(tmp_path_factory, text: str) -> object:
    path = tmp_path_factory.mktemp("cfg") / "config.toml"
    path.write_text(text)
    return config.load(path, env={})


@given(text=config_toml())
def test_config_toml(tmp_path_factory, text):
    clean(_load, tmp_path_factory, text)


@pytest.mark.parametrize("text", ['ceilings = "x"\n', "ceilings = [1]\n", "listen = [1]\n",
                                  "bootstrap = [{a = 1}]\n"])
def test_config_wrong_types_are_config_errors(tmp_path_factory, text):
    clean(_load, tmp_path_factory, text)


@pytest.mark.parametrize("text", ['open = "false"\n', "workers = 1.5\n",
                                  'mdns_interfaces = "eth0"\n'])
def test_config_wrong_types_are_not_coerced(tmp_path_factory, text):
    from phase_core.errors import ConfigError

    with pytest.raises(ConfigError):
        _load(tmp_path_factory, text)
