import base64
import os
import stat
import struct
import threading
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from phase_core import identity
from phase_core.errors import ConfigError, Malformed, MissingInput


def test_create_load_round_trip_and_repr_hides_secret(tmp_path):
    path = tmp_path / "k" / "key"
    ident = identity.create(path)
    assert identity.load(path) == ident
    seed_hex = ident.to_file_bytes().split(b'"seed":"')[1][:64].decode()
    assert seed_hex not in repr(ident) and seed_hex not in str(ident)
    assert ident.node_id[:16] in repr(ident)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(TypeError):
        import pickle
        pickle.dumps(ident)


def test_create_refuses_to_overwrite(tmp_path):
    path = tmp_path / "key"
    first = identity.create(path)
    with pytest.raises(ConfigError, match="already exists"):
        identity.create(path)
    assert identity.load(path) == first


def test_load_refuses_group_or_world_readable(tmp_path):
    path = tmp_path / "key"
    identity.create(path)
    os.chmod(path, 0o640)
    with pytest.raises(ConfigError, match="chmod 600"):
        identity.load(path)


def test_load_missing_and_garbage(tmp_path):
    with pytest.raises(MissingInput, match="phase-key new"):
        identity.load(tmp_path / "nope")
    bad = tmp_path / "bad"
    fd = os.open(bad, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"not a key")
    os.close(fd)
    with pytest.raises(Malformed):
        identity.load(bad)


def test_key_file_never_readable_by_others_at_any_instant(tmp_path):
    """Watch the directory while keys are created; no entry may ever have group/other bits."""
    os.umask(0o022)
    stop = threading.Event()
    seen_modes: list[int] = []

    def watch() -> None:
        while not stop.is_set():
            for entry in os.scandir(tmp_path):
                try:
                    seen_modes.append(stat.S_IMODE(entry.stat(follow_symlinks=False).st_mode))
                except FileNotFoundError:
                    pass

    t = threading.Thread(target=watch)
    t.start()
    try:
        for i in range(200):
            identity.create(tmp_path / f"key{i}")
    finally:
        stop.set()
        t.join()
    assert seen_modes, "the watcher saw no files"
    assert all(m & 0o077 == 0 for m in seen_modes), {oct(m) for m in seen_modes}


def _load_or_create(path: str) -> str:
    return identity.load_or_create(Path(path)).node_id


def test_concurrent_load_or_create_agree(tmp_path):
    for round_ in range(5):
        path = str(tmp_path / f"race{round_}" / "key")
        with ProcessPoolExecutor(max_workers=4) as pool:
            ids = list(pool.map(_load_or_create, [path] * 8))
        assert len(set(ids)) == 1
        assert identity.load(Path(path)).node_id == ids[0]
        leftovers = [p for p in Path(path).parent.iterdir() if p.name != "key"]
        assert leftovers == []


def test_openssh_export_decodes_to_the_public_key():
    ident = identity.Identity(bytes(range(32)))
    alg, b64, comment = ident.openssh_public("me").split(" ")
    assert alg == "ssh-ed25519" and comment == "me"
    blob = base64.b64decode(b64)
    n = struct.unpack(">I", blob[:4])[0]
    assert blob[4:4 + n] == b"ssh-ed25519"
    m = struct.unpack(">I", blob[4 + n:8 + n])[0]
    assert blob[8 + n:8 + n + m] == ident.public and m == 32


def test_check_node_id():
    with pytest.raises(Malformed):
        identity.check_node_id("AB" * 32)
    with pytest.raises(Malformed):
        identity.check_node_id("ab" * 31)


def test_key_file_mode_is_0600_from_creation(tmp_path, monkeypatch):
    """Deterministic form of the check above: stat every fd right after open()."""
    from phase_core import fsutil

    real_open = os.open
    modes: list[int] = []

    def spy(path, flags, mode=0o777, *a, **kw):
        fd = real_open(path, flags, mode, *a, **kw)
        if flags & os.O_CREAT:
            modes.append(stat.S_IMODE(os.fstat(fd).st_mode))
        return fd

    monkeypatch.setattr(fsutil.os, "open", spy)
    old = os.umask(0)  # the most permissive umask: the mode must not depend on it
    try:
        identity.create(tmp_path / "key")
    finally:
        os.umask(old)
    assert modes == [0o600]
