"""The master keys a server holds: the current one, which seals, and previous ones, which only open.

Rotating the master key has an overlap. The operator starts servers with the new key as
`OUTPOST_SECRETS__MASTER_KEY` and the old one in `OUTPOST_SECRETS__PREVIOUS_MASTER_KEYS`; rows sealed
under either open, new rows are sealed under the new one, and `outpost secrets reseal` moves the old rows
over. A row names the key that sealed it (its key id), so a row is only ever opened with that key: a
row under a key the server does not hold is refused by name, never decrypted with another key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from outpost.secrets.box import SecretBox, SecretUnreadable

KeyRole = Literal["current", "previous", "missing"]
"""A master key's part on this server: it seals, it only opens, or the server was not given it."""


@dataclass(frozen=True, slots=True)
class KeyHolding:
    """How many live secrets one master key sealed, and whether this server holds that key."""

    key_id: str
    role: KeyRole
    live_secrets: int


class MasterKeyring:
    """The current master key and the previous ones still accepted, each as a SecretBox."""

    def __init__(self, current: SecretBox, previous: Sequence[SecretBox] = (), source: str = "") -> None:
        self.current = current
        self.source = source
        """Where the current key came from, for messages (`OUTPOST_SECRETS__MASTER_KEY`, a key file)."""
        others = {box.key_id: box for box in previous if box.key_id != current.key_id}
        self.previous: tuple[SecretBox, ...] = tuple(others.values())
        self._boxes = {current.key_id: current, **others}

    @property
    def key_id(self) -> str:
        """The id of the key that seals new secrets."""
        return self.current.key_id

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Every key id this server can open, the current one first."""
        return tuple(self._boxes)

    def role_of(self, key_id: str) -> KeyRole:
        if key_id == self.current.key_id:
            return "current"
        return "previous" if key_id in self._boxes else "missing"

    def seal(self, plaintext: bytes, context: bytes) -> tuple[str, bytes]:
        """`plaintext` sealed under the current key, with that key's id."""
        return self.current.key_id, self.current.seal(plaintext, context)

    def open(self, sealed: bytes, context: bytes, key_id: str) -> bytes:
        """Opens what the key `key_id` sealed. Raises SecretUnreadable when this server does not hold that
        key (nothing is tried with another key), or when the bytes or context do not match."""
        box = self._boxes.get(key_id)
        if box is None:
            raise SecretUnreadable(
                f"a stored secret was sealed under master key id {key_id}, which this server does not "
                f"hold ({self.describe()}); add that key to OUTPOST_SECRETS__PREVIOUS_MASTER_KEYS"
            )
        return box.open(sealed, context)

    def derive(self, purpose: bytes) -> bytes:
        """The current key's key for `purpose`: what signs or seals from now on."""
        return self.current.derive(purpose)

    def derive_all(self, purpose: bytes) -> list[bytes]:
        """The key for `purpose` under every held master key, the current one first: what checks a
        signature made before the rotation (a download link handed out an hour ago)."""
        return [box.derive(purpose) for box in self._boxes.values()]

    def describe(self) -> str:
        """The held key ids, for messages: `a1b2… (current), c3d4… (previous)`."""
        return ", ".join(f"{key_id} ({self.role_of(key_id)})" for key_id in self._boxes)
