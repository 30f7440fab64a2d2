"""Node identity: one Ed25519 key whose public half is the node id.

The key file is one line of JSON::

    {"v":1,"type":"secret_key","alg":"ed25519","seed":"<64 hex>","key":"<64 hex>"}

written atomically with mode 0600 from its first byte, fsync'd and linked into
place, so no reader ever sees a partial or world-readable key, and two racing
creators end with one key.
"""

from __future__ import annotations

import os
import stat
import struct
from pathlib import Path

from phase_core import crypto
from phase_core.canonical import is_hex, parse
from phase_core.errors import ConfigError, Malformed, MissingInput
from phase_core.fsutil import write_atomic
from phase_core.oserrors import fs_errors

KEY_FILE_MAX_BYTES = 4096


def check_node_id(value: object, what: str = "key") -> str:
    """Return ``value`` if it is 64 lowercase hex characters, else raise ``Malformed``."""
    if not is_hex(value, 64):
        raise Malformed(f"{what} {repr(value)[:80]} is not 64 lowercase hex characters "
                        "(a raw 32-byte Ed25519 public key)")
    return value


class Identity:
    """An Ed25519 signing identity. ``repr()`` never shows the secret."""

    __slots__ = ("_seed", "node_id", "public")

    def __init__(self, seed: bytes) -> None:
        self._seed = bytes(seed)
        self.public = crypto.public_key(self._seed)
        self.node_id = self.public.hex()

    @classmethod
    def generate(cls) -> Identity:
        return cls(crypto.new_seed())

    def sign(self, message: bytes) -> bytes:
        return crypto.sign(self._seed, message)

    def x25519_secret(self) -> bytes:
        return crypto.x25519_secret(self._seed)

    def openssh_public(self, comment: str = "phase") -> str:
        """The public key as an OpenSSH ``authorized_keys`` line."""
        return openssh_public(self.node_id, comment)

    def to_file_bytes(self) -> bytes:
        # json.dumps of the dict in this order, compact (the values are hex and constants)
        return (f'{{"v":1,"type":"secret_key","alg":"ed25519","seed":"{self._seed.hex()}",'
                f'"key":"{self.node_id}"}}\n').encode()

    def __repr__(self) -> str:
        return f"Identity(node_id={self.node_id[:16]}…)"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Identity) and other.node_id == self.node_id

    def __hash__(self) -> int:
        return hash(self.node_id)

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("an Identity is not picklable (it holds a secret key)")


def openssh_public(node_id: str, comment: str = "phase") -> str:
    raw = bytes.fromhex(check_node_id(node_id))
    alg = b"ssh-ed25519"
    blob = struct.pack(">I", len(alg)) + alg + struct.pack(">I", len(raw)) + raw
    from binascii import b2a_base64
    return f"ssh-ed25519 {b2a_base64(blob, newline=False).decode()} {comment}".rstrip()


def parse_key_file(data: bytes, where: str = "key file") -> Identity:
    if len(data) > KEY_FILE_MAX_BYTES:
        raise Malformed(f"{where} is too large to be a key file")
    try:
        doc = parse(data, max_bytes=KEY_FILE_MAX_BYTES)
    except Malformed:
        raise Malformed(f"{where} is not a Phase key file") from None
    if (not isinstance(doc, dict) or doc.get("type") != "secret_key"
            or doc.get("alg") != "ed25519" or doc.get("v") != 1):
        raise Malformed(f"{where} is not a Phase Ed25519 secret key file")
    seed_hex = doc.get("seed")
    if not is_hex(seed_hex, 64):
        raise Malformed(f"{where} has a malformed seed")
    ident = Identity(bytes.fromhex(seed_hex))
    if doc.get("key") != ident.node_id:
        raise Malformed(f"{where}: the public key does not match the secret key")
    return ident


def load(path: Path) -> Identity:
    """Load a key file; refuse one that group or others can read."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise MissingInput(f"no key file at {path}",
                           hint="create one with `phase-key new`") from None
    except OSError as e:
        raise ConfigError(f"cannot open key file {path}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"key file {path} is not a regular file")
        if st.st_mode & 0o077:
            raise ConfigError(
                f"key file {path} is readable by others (mode {stat.S_IMODE(st.st_mode):04o})",
                hint=f"run `chmod 600 {path}`")
        data = os.read(fd, KEY_FILE_MAX_BYTES + 1)
    finally:
        os.close(fd)
    return parse_key_file(data, str(path))


def create(path: Path) -> Identity:
    """Create a new key at ``path``; fail if one exists there."""
    path = Path(path)
    with fs_errors(path.parent, "create the directory"):
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    ident = Identity.generate()
    if not write_atomic(path, ident.to_file_bytes(), mode=0o600, exclusive=True):
        raise ConfigError(f"a key already exists at {path}",
                          hint="refusing to overwrite it; remove it first if you mean to")
    return ident


def load_or_create(path: Path) -> Identity:
    """Load the key at ``path``, creating it first if there is none.

    Safe against concurrent callers: the file is linked into place only when
    complete, and the loser of a creation race loads the winner's key.
    """
    path = Path(path)
    try:
        return load(path)
    except MissingInput:
        pass
    with fs_errors(path.parent, "create the directory"):
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    ident = Identity.generate()
    if write_atomic(path, ident.to_file_bytes(), mode=0o600, exclusive=True):
        return ident
    return load(path)
