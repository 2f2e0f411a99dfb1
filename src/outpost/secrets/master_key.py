"""Where the master keys come from: the environment, or a key file made on first start.

`OUTPOST_SECRETS__MASTER_KEY` (32 bytes, base64) wins; it is what several servers sharing one database
set. Otherwise the key lives in a file (default `master.key` in the data dir), created with mode 0600
the first time a server starts. A key file others can read, or one that does not hold a key, stops the
server with a message that says what to do; no key is ever guessed or replaced. Previous keys, kept
while their rows are re-sealed, come from `OUTPOST_SECRETS__PREVIOUS_MASTER_KEYS` only.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from pydantic import SecretStr

from outpost.errors import Unavailable
from outpost.logs import remember_secret
from outpost.secrets.box import MASTER_KEY_BYTES, SecretBox
from outpost.secrets.keyring import MasterKeyring

ENV_NAME = "OUTPOST_SECRETS__MASTER_KEY"
PREVIOUS_ENV_NAME = "OUTPOST_SECRETS__PREVIOUS_MASTER_KEYS"


class MasterKeyError(Unavailable):
    """The master key is missing, malformed, or stored unsafely."""


class MasterKeyMissing(MasterKeyError):
    """No master key is set and there is no key file (and none was to be created)."""


def load_keyring(
    from_env: SecretStr | None, previous: Sequence[SecretStr], key_file: Path, *, create: bool = True
) -> MasterKeyring:
    """The current key (as `load_master_key` finds it) and the previous ones. With `create` false a
    missing key file is an error instead of a new key: offline commands must not invent one. Raises
    MasterKeyError naming the setting or file at fault (never its value)."""
    if from_env is not None:
        key, source = _decode(from_env.get_secret_value(), ENV_NAME), ENV_NAME
    else:
        key, source = _from_file(key_file, create=create)
    older = [
        SecretBox(_decode(text.get_secret_value(), f"item {number} of {PREVIOUS_ENV_NAME}"))
        for number, text in enumerate(previous, start=1)
    ]
    return MasterKeyring(SecretBox(key), older, source)


def load_master_key(from_env: SecretStr | None, key_file: Path) -> bytes:
    """The master key: `from_env` if given, else the contents of `key_file`, created if it does not exist.
    Raises MasterKeyError."""
    if from_env is not None:
        return _decode(from_env.get_secret_value(), ENV_NAME)
    return _from_file(key_file, create=True)[0]


def _from_file(key_file: Path, *, create: bool) -> tuple[bytes, str]:
    """The key in `key_file` and a description of where it came from."""
    try:
        return _read_key_file(key_file), f"the master key file {key_file}"
    except FileNotFoundError:
        if not create:
            raise MasterKeyMissing(
                f"no master key: {ENV_NAME} is unset and the master key file {key_file} does not exist; "
                f"set {ENV_NAME}, or OUTPOST_DATA_DIR or OUTPOST_SECRETS__MASTER_KEY_FILE to where the "
                "server keeps it"
            ) from None
        return _create_key_file(key_file), f"the master key file {key_file}, new at this start"
    except OSError as exc:  # a symlink (refused on purpose), a directory, no permission
        raise MasterKeyError(f"cannot read the master key file {key_file}: {exc.strerror}") from exc


def encode_master_key(key: bytes) -> str:
    return base64.b64encode(key).decode()


def _decode(text: str, source: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != MASTER_KEY_BYTES:
        raise MasterKeyError(
            f"{source} is not a master key: it must be {MASTER_KEY_BYTES} random bytes in base64 "
            "(e.g. the output of `openssl rand -base64 32`)"
        )
    remember_secret(text.strip())  # as configured, and as this server would write it: in no log line
    remember_secret(encode_master_key(key))
    return key


def _read_key_file(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as file:
        mode = os.fstat(file.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise MasterKeyError(f"the master key file {path} is not a regular file")
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise MasterKeyError(
                f"the master key file {path} can be read by others (mode {stat.S_IMODE(mode):o}); "
                "make it 0600 with chmod, and consider the key compromised if others did read it"
            )
        text = file.read(1024).decode("ascii", errors="replace")
    return _decode(text, f"the master key file {path}")


def _create_key_file(path: Path) -> bytes:
    """Written to a private temporary file, then linked into place: a concurrent reader sees either no
    file or the whole key, and of two servers starting at once, one key wins and both use it."""
    key = os.urandom(MASTER_KEY_BYTES)
    remember_secret(encode_master_key(key))
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(encode_master_key(key).encode() + b"\n")
            file.flush()
            os.fsync(file.fileno())
        os.link(staging, path)
    except FileExistsError:
        return _read_key_file(path)
    finally:
        staging.unlink(missing_ok=True)
    return key
