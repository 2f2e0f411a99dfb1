"""Encrypting secrets at rest with AES-256-GCM.

The master key is never used directly: HKDF derives one key per purpose from it, so the key that
encrypts secrets and the one that signs artifact URLs cannot be confused. Each ciphertext is bound to
where it is stored (tenant and name, as associated data), so a row copied onto another tenant's or
another secret's row does not decrypt. The key id stored beside each ciphertext says which master key
sealed it: a server started with the wrong key says so instead of failing on garbage.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from outpost.errors import Unavailable

MASTER_KEY_BYTES = 32
_FORMAT = b"\x01"  # the layout below; a later one gets another byte
_NONCE_BYTES = 12  # random 96-bit nonces: safe for far more than 2**32 secrets per key


class SecretUnreadable(Unavailable):
    """A stored secret cannot be decrypted: the master key is not the one it was sealed with, or the
    stored bytes were changed."""


class SecretBox:
    def __init__(self, master_key: bytes) -> None:
        if len(master_key) != MASTER_KEY_BYTES:
            raise ValueError(f"a master key is {MASTER_KEY_BYTES} bytes, not {len(master_key)}")
        self._master = master_key
        self._aead = AESGCM(self.derive(b"outpost secrets v1"))
        self.key_id = hmac.new(master_key, b"outpost master key id", hashlib.sha256).hexdigest()[:16]
        """Names the master key without revealing it; stored with each ciphertext."""

    def derive(self, purpose: bytes) -> bytes:
        """A 32-byte key for one purpose, e.g. signing artifact URLs."""
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(self._master)

    def seal(self, plaintext: bytes, context: bytes) -> bytes:
        """The ciphertext of `plaintext`, readable only with the same `context` (where it is stored)."""
        nonce = os.urandom(_NONCE_BYTES)
        return _FORMAT + nonce + self._aead.encrypt(nonce, plaintext, _FORMAT + context)

    def open(self, sealed: bytes, context: bytes) -> bytes:
        """Raises SecretUnreadable when `sealed` was not made by `seal` with this key and context."""
        if len(sealed) < 1 + _NONCE_BYTES + 16 or sealed[:1] != _FORMAT:
            raise SecretUnreadable("a stored secret is corrupt (unknown format)")
        nonce, body = sealed[1 : 1 + _NONCE_BYTES], sealed[1 + _NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, body, _FORMAT + context)
        except InvalidTag:
            raise SecretUnreadable(
                "a stored secret does not decrypt: it was changed, or sealed under another master key"
            ) from None
