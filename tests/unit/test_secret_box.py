"""AES-GCM sealing: round trips, and every way a ciphertext can be misused fails loudly."""

from __future__ import annotations

import os

import pytest

from outpost.secrets.box import SecretBox, SecretUnreadable


@pytest.fixture
def box() -> SecretBox:
    return SecretBox(os.urandom(32))


def test_a_sealed_secret_opens_with_the_same_key_and_context(box: SecretBox) -> None:
    sealed = box.seal(b"sk-live-123", b"tenant-a\0provider/openai/api_key\x001")
    assert b"sk-live-123" not in sealed
    assert box.open(sealed, b"tenant-a\0provider/openai/api_key\x001") == b"sk-live-123"


def test_sealing_twice_gives_different_ciphertexts(box: SecretBox) -> None:
    assert box.seal(b"same", b"ctx") != box.seal(b"same", b"ctx")


def test_a_ciphertext_moved_to_another_tenant_or_name_does_not_open(box: SecretBox) -> None:
    sealed = box.seal(b"secret", b"tenant-a\0name\x001")
    for other in (b"tenant-b\0name\x001", b"tenant-a\0other\x001", b"tenant-a\0name\x002", b""):
        with pytest.raises(SecretUnreadable, match="does not decrypt"):
            box.open(sealed, other)


@pytest.mark.parametrize("position", [0, 1, 12, 13, -1])
def test_a_changed_byte_anywhere_is_detected(box: SecretBox, position: int) -> None:
    sealed = bytearray(box.seal(b"secret", b"ctx"))
    sealed[position] ^= 0x01
    with pytest.raises(SecretUnreadable):
        box.open(bytes(sealed), b"ctx")


@pytest.mark.parametrize("garbage", [b"", b"\x01", b"\x01" + b"\x00" * 27, b"not a ciphertext at all"])
def test_truncated_or_foreign_bytes_are_refused(box: SecretBox, garbage: bytes) -> None:
    with pytest.raises(SecretUnreadable):
        box.open(garbage, b"ctx")


def test_another_master_key_cannot_open_it_and_has_another_key_id(box: SecretBox) -> None:
    other = SecretBox(os.urandom(32))
    with pytest.raises(SecretUnreadable):
        other.open(box.seal(b"secret", b"ctx"), b"ctx")
    assert other.key_id != box.key_id
    assert len(box.key_id) == 16


def test_the_key_id_and_derived_keys_are_stable_per_master_key() -> None:
    master = os.urandom(32)
    first, second = SecretBox(master), SecretBox(master)
    assert first.key_id == second.key_id
    assert first.derive(b"artifact urls") == second.derive(b"artifact urls")
    assert first.derive(b"artifact urls") != first.derive(b"something else")
    assert master not in first.derive(b"artifact urls")


@pytest.mark.parametrize("length", [0, 16, 31, 33])
def test_a_master_key_of_the_wrong_size_is_refused(length: int) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        SecretBox(os.urandom(length))
