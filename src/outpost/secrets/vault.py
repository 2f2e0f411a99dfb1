"""Sealing secrets into rows and opening them again, inside the caller's transaction.

A secret is stored by tenant and name (`provider/anthropic/api_key`, `git/github.com`). Writing one adds
a version; `retire_older` retires the versions before it. The associated data binds each ciphertext to
its tenant, name and version, so no row can be replayed in another's place.
"""

from __future__ import annotations

from pydantic import SecretStr

from outpost.db.repositories import secrets as repo
from outpost.db.repositories.secrets import SecretRow
from outpost.db.store import Connection
from outpost.db.types import utc_now
from outpost.domain.ids import new_ulid
from outpost.secrets.box import SecretBox, SecretUnreadable


class SecretVault:
    def __init__(self, box: SecretBox) -> None:
        self._box = box

    async def check_key(self, conn: Connection) -> None:
        """Raises SecretUnreadable when live secrets were sealed under another master key: a server
        started with the wrong key stops at once instead of failing later, one secret at a time."""
        others = await repo.foreign_key_ids(conn, self._box.key_id)
        if others:
            raise SecretUnreadable(
                f"stored secrets were encrypted with another master key (key id {', '.join(others)}; this "
                f"key's id is {self._box.key_id}): start with the original OUTPOST_SECRETS__MASTER_KEY "
                "or master key file"
            )

    async def store(
        self, conn: Connection, tenant_id: str, name: str, value: SecretStr, *, retire_older: bool
    ) -> int:
        """Seal `value` as the newest version of the secret; returns that version."""
        version = await repo.latest_version(conn, tenant_id, name) + 1
        sealed = self._box.seal(value.get_secret_value().encode(), _context(tenant_id, name, version))
        now = utc_now()
        row = SecretRow(new_ulid(), tenant_id, name, version, self._box.key_id, sealed, now, None)
        await repo.insert_secret(conn, row)
        if retire_older:
            await repo.retire_versions(conn, tenant_id, name, now, below_version=version)
        return version

    async def current(self, conn: Connection, tenant_id: str, name: str) -> tuple[int, SecretStr] | None:
        """The newest live version and its value; None when there is none. Raises SecretUnreadable."""
        live = await repo.live_versions(conn, tenant_id, name)
        if not live:
            return None
        newest = live[0]
        if newest.key_id != self._box.key_id:
            await self.check_key(conn)
        plain = self._box.open(newest.sealed, _context(tenant_id, name, newest.version))
        try:
            return newest.version, SecretStr(plain.decode())
        except UnicodeDecodeError:
            raise SecretUnreadable(f"the stored secret {name!r} is not text") from None

    async def current_version(self, conn: Connection, tenant_id: str, name: str) -> int | None:
        """The newest live version, without decrypting it."""
        live = await repo.live_versions(conn, tenant_id, name)
        return live[0].version if live else None

    async def live_names(self, conn: Connection, tenant_id: str, prefix: str) -> list[str]:
        """The names under `prefix` (such as `git/`) that have a live version, sorted; nothing is
        decrypted."""
        return await repo.live_names(conn, tenant_id, prefix)

    async def retire(self, conn: Connection, tenant_id: str, name: str) -> int:
        """Retire every live version; returns how many there were."""
        return await repo.retire_versions(conn, tenant_id, name, utc_now())


def _context(tenant_id: str, name: str, version: int) -> bytes:
    return f"{tenant_id}\0{name}\0{version}".encode()
