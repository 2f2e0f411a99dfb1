"""The master key: from the environment, or a private file made once; anything unsafe stops the server."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest
from pydantic import SecretStr

from outpost.secrets.master_key import MasterKeyError, encode_master_key, load_master_key


def test_the_first_start_creates_a_private_key_file_and_later_starts_reuse_it(tmp_path: Path) -> None:
    path = tmp_path / "data" / "master.key"
    key = load_master_key(None, path)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_master_key(None, path) == key
    assert [p.name for p in path.parent.iterdir()] == ["master.key"]  # no staging file left


def test_the_environment_wins_over_the_file(tmp_path: Path) -> None:
    key = os.urandom(32)
    assert load_master_key(SecretStr(encode_master_key(key)), tmp_path / "absent.key") == key
    assert not (tmp_path / "absent.key").exists()


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not base64 !!",
        base64.b64encode(os.urandom(16)).decode(),
        base64.b64encode(os.urandom(64)).decode(),
    ],
)
def test_a_malformed_key_in_the_environment_is_a_clear_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(MasterKeyError, match="OUTPOST_SECRETS__MASTER_KEY is not a master key"):
        load_master_key(SecretStr(text), tmp_path / "master.key")


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    load_master_key(None, path)
    path.chmod(0o644)
    with pytest.raises(MasterKeyError, match="can be read by others"):
        load_master_key(None, path)


def test_a_key_file_without_a_key_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    path.write_text("oops\n")
    path.chmod(0o600)
    with pytest.raises(MasterKeyError, match="is not a master key"):
        load_master_key(None, path)
    assert path.read_text() == "oops\n"


def test_a_symlinked_key_file_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "elsewhere.key"
    load_master_key(None, real)
    (tmp_path / "master.key").symlink_to(real)
    with pytest.raises(MasterKeyError, match="cannot read the master key file"):
        load_master_key(None, tmp_path / "master.key")


def test_a_directory_in_place_of_the_key_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "master.key").mkdir()
    with pytest.raises(MasterKeyError):
        load_master_key(None, tmp_path / "master.key")
