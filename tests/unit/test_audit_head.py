"""The audit head's seal: a MAC over the head's seq and hash, under the chain key, that no row's MAC can
stand in for; a head moved without the key, or never sealed, is named."""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import replace

import pytest

from outpost.audit.chain import AuditHead, ChainKey, encode_head, encode_row
from outpost.audit.verify import ChainBroken, check_head_seal

KEY = ChainKey(os.urandom(32))
HASH = "ab" * 32


def sealed(seq: int, head_hash: str = HASH, key: ChainKey = KEY) -> AuditHead:
    return AuditHead(seq, head_hash, key.head_mac(seq, head_hash))


@pytest.mark.parametrize("key", [b"", os.urandom(32), os.urandom(100)])
def test_the_head_mac_is_hmac_sha256_of_the_head_encoding(key: bytes) -> None:
    for seq, head_hash in [(0, "0" * 64), (7, HASH), (10**12, "f" * 64)]:
        expected = hmac.new(key, encode_head(seq, head_hash), hashlib.sha256).hexdigest()
        assert ChainKey(key).head_mac(seq, head_hash) == expected


def test_a_head_never_encodes_as_a_row_does() -> None:
    row = encode_row(HASH, 7, "2025-03-01 12:00:00.000000", None, None, "head", None, None, "{}")
    head = encode_head(7, HASH)
    assert head.partition(b"\x1e")[0] == b"outpost.audit.head.v1"
    assert row.partition(b"\x1e")[0] == b"outpost.audit.v1"
    assert encode_head(17, HASH) != encode_head(1, "7" + HASH)  # the lengths tell where the seq ends


def test_a_head_is_sealed_only_for_its_own_seq_and_hash_under_the_key() -> None:
    head = sealed(7)
    assert KEY.seals(head)
    assert not KEY.seals(replace(head, seq=6))
    assert not KEY.seals(replace(head, hash="cd" * 32))
    assert not KEY.seals(replace(head, mac=None))
    assert not KEY.seals(replace(head, mac="é" * 64))  # text an edited column may hold: no error
    assert not ChainKey(os.urandom(32)).seals(head)


def test_a_sealed_head_passes_under_the_key_that_sealed_it_among_others() -> None:
    old, new = ChainKey(os.urandom(32)), ChainKey(os.urandom(32))
    check_head_seal(sealed(3, key=old), [new, old])  # sealed before a master key rotation
    with pytest.raises(ChainBroken, match=r"at seq 3: the head at seq 3 is not sealed.*PREVIOUS_MASTER_KEYS"):
        check_head_seal(sealed(3, key=old), [new])


def test_a_head_moved_back_without_the_key_is_named_with_what_may_be_missing() -> None:
    moved = replace(sealed(9), seq=7, hash="cd" * 32)
    with pytest.raises(ChainBroken) as caught:
        check_head_seal(moved, [KEY])
    assert caught.value.seq == 7
    assert caught.value.reason == (
        "the head at seq 7 is not sealed by the audit key: it was edited or moved back (or sealed under a "
        "previous master key not given in OUTPOST_SECRETS__PREVIOUS_MASTER_KEYS); rows after seq 7 may "
        "have been cut off"
    )


def test_a_head_never_sealed_is_named_as_such() -> None:
    with pytest.raises(ChainBroken, match=r"at seq 4: the head at seq 4 .* its mac is empty") as caught:
        check_head_seal(AuditHead(4, HASH, None), [KEY])
    assert "rows after seq 4 may have been cut off" in caught.value.reason
