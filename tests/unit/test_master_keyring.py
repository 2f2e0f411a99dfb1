"""The master keyring: the current key seals, previous keys only open, and a row is opened only with the
key it names."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qsl

import pytest
from pydantic import SecretStr

from outpost.app import url_signing_keys
from outpost.secrets.box import SecretBox, SecretUnreadable
from outpost.secrets.key_list import split_keys
from outpost.secrets.keyring import MasterKeyring
from outpost.secrets.master_key import MasterKeyError, MasterKeyMissing, encode_master_key, load_keyring
from outpost.settings import SecretSettings
from outpost.storage.factory import build_url_signer
from outpost.storage.settings import StorageSettings
from outpost.storage.signing import SignatureInvalid, UrlSigner


def _key() -> bytes:
    return os.urandom(32)


def test_the_current_key_seals_and_previous_keys_still_open() -> None:
    old, new = SecretBox(_key()), SecretBox(_key())
    sealed_before = old.seal(b"sk-before-rotation", b"ctx")
    keyring = MasterKeyring(new, [old])
    key_id, sealed_after = keyring.seal(b"sk-after-rotation", b"ctx")
    assert key_id == new.key_id
    assert new.open(sealed_after, b"ctx") == b"sk-after-rotation"
    assert keyring.open(sealed_before, b"ctx", old.key_id) == b"sk-before-rotation"
    assert keyring.key_ids == (new.key_id, old.key_id)
    roles = [keyring.role_of(key_id) for key_id in (new.key_id, old.key_id, "0" * 16)]
    assert roles == ["current", "previous", "missing"]


def test_a_row_under_a_key_not_held_is_refused_by_name_without_trying_another_key() -> None:
    stranger, mine = SecretBox(_key()), SecretBox(_key())
    keyring = MasterKeyring(mine)
    with pytest.raises(SecretUnreadable) as caught:
        keyring.open(stranger.seal(b"secret", b"ctx"), b"ctx", stranger.key_id)
    assert stranger.key_id in caught.value.detail
    assert f"{mine.key_id} (current)" in caught.value.detail
    assert "OUTPOST_SECRETS__PREVIOUS_MASTER_KEYS" in caught.value.detail


def test_a_row_that_names_the_wrong_key_does_not_open_with_garbage() -> None:
    old, new = SecretBox(_key()), SecretBox(_key())
    keyring = MasterKeyring(new, [old])
    with pytest.raises(SecretUnreadable, match="does not decrypt"):
        keyring.open(old.seal(b"secret", b"ctx"), b"ctx", new.key_id)


def test_derived_keys_sign_with_the_current_key_and_verify_with_every_held_key() -> None:
    old, new = SecretBox(_key()), SecretBox(_key())
    keyring = MasterKeyring(new, [old, new])  # the current key listed again among previous: kept once
    assert keyring.derive(b"urls") == new.derive(b"urls")
    assert keyring.derive_all(b"urls") == [new.derive(b"urls"), old.derive(b"urls")]
    assert keyring.previous == (old,)


def test_the_keyring_loads_the_current_key_and_the_previous_ones(tmp_path: Path) -> None:
    current, previous = _key(), _key()
    keyring = load_keyring(
        SecretStr(encode_master_key(current)), [SecretStr(encode_master_key(previous))], tmp_path / "none.key"
    )
    assert keyring.key_id == SecretBox(current).key_id
    assert keyring.key_ids[1] == SecretBox(previous).key_id
    assert keyring.source == "OUTPOST_SECRETS__MASTER_KEY"
    assert not (tmp_path / "none.key").exists()


def test_a_malformed_previous_key_is_named_by_position_never_echoed(tmp_path: Path) -> None:
    good = encode_master_key(_key())
    with pytest.raises(MasterKeyError) as caught:
        load_keyring(SecretStr(good), [SecretStr(good), SecretStr("c2hvcnQ=")], tmp_path / "k")
    assert "item 2 of OUTPOST_SECRETS__PREVIOUS_MASTER_KEYS is not a master key" in caught.value.detail
    assert "c2hvcnQ=" not in caught.value.detail


def test_offline_loading_never_invents_a_key(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    with pytest.raises(MasterKeyMissing, match="does not exist"):
        load_keyring(None, [], path, create=False)
    assert not path.exists()
    made = load_keyring(None, [], path)
    assert made.source.endswith("new at this start")
    again = load_keyring(None, [], path, create=False)
    assert (again.key_id, again.source) == (made.key_id, f"the master key file {path}")


@pytest.mark.parametrize(
    ("spelled", "count"),
    [("", 0), ("a2V5MQ==", 1), ("a2V5MQ==, a2V5Mg==", 2), ('["a2V5MQ==", "a2V5Mg=="]', 2), (" [ ] ", 0)],
)
def test_previous_keys_are_a_json_list_or_separated_by_commas(spelled: str, count: int) -> None:
    keys = SecretSettings(previous_master_keys=spelled).previous_master_keys  # type: ignore[arg-type]
    assert len(keys) == count
    assert all(isinstance(key, SecretStr) for key in keys)


def test_a_malformed_json_list_of_keys_is_refused_without_echoing_it() -> None:
    with pytest.raises(ValueError, match="is not a JSON list") as caught:
        split_keys('["a2V5MQ==", ')
    assert "a2V5MQ" not in str(caught.value)


def test_download_links_signed_before_a_rotation_verify_until_the_old_key_is_dropped() -> None:
    old, new = SecretBox(_key()), SecretBox(_key())

    def signer(current: SecretBox, *previous: SecretBox) -> UrlSigner:
        return build_url_signer(StorageSettings(), *url_signing_keys(MasterKeyring(current, previous)))

    handed_out = dict(parse_qsl(signer(old).sign("/v1/artifacts/a")))
    overlap = signer(new, old)
    overlap.verify("/v1/artifacts/a", handed_out)
    signed_now = dict(parse_qsl(overlap.sign("/v1/artifacts/a")))
    signer(new).verify("/v1/artifacts/a", signed_now)  # new links are signed with the new key
    with pytest.raises(SignatureInvalid):
        signer(new).verify("/v1/artifacts/a", handed_out)
    with pytest.raises(SignatureInvalid):
        overlap.verify("/v1/artifacts/b", handed_out)
