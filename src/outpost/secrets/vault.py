"""Sealing secrets into rows and opening them again, inside the caller's transaction.

A secret is stored by tenant and name (`provider/anthropic/api_key`, `git/github.com/credential`).
Writing one adds a version; the newest live version is the one in force, and older live versions stay
readable until they are retired (all at once with `retire_older`, or one by one with `retire_version`):
a tenant rotating a key can keep the old one until the new one is known to work, and retiring the new
one brings the old one back. The associated data binds each ciphertext to its tenant, name and version,
so no row can be replayed in another's place. Every value sealed or opened is remembered by the log
redaction (`outpost.logs`), so no log line can print it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pydantic import SecretStr

from outpost.db.repositories import secrets as repo
from outpost.db.repositories.secrets import SecretRow
from outpost.db.store import Connection
from outpost.db.types import utc_now
from outpost.domain.ids import new_ulid
from outpost.logs import remember_secret
from outpost.secrets.box import SecretUnreadable
from outpost.secrets.keyring import KeyHolding, MasterKeyring

_EXAMPLES = 3  # rows named in a message about rows under a missing key


@dataclass(frozen=True, slots=True)
class SecretVersion:
    """A live version of a secret, without its value."""

    version: int
    created_at: datetime


class SecretVault:
    def __init__(self, keyring: MasterKeyring) -> None:
        self._keyring = keyring

    async def check_key(self, conn: Connection) -> None:
        """Raises SecretUnreadable, naming the key ids and a few of the rows, when live secrets were
        sealed under a master key this server does not hold: a server started with the wrong key stops
        at once instead of failing later, one secret at a time. Nothing is decrypted."""
        missing = [held for held in await self.holdings(conn) if held.role == "missing"]
        if not missing:
            return
        examples = await repo.live_rows_under(conn, [held.key_id for held in missing], _EXAMPLES)
        under = ", ".join(f"{held.key_id} ({held.live_secrets} live)" for held in missing)
        named = "; ".join(f"tenant {row.tenant_id} {row.name} v{row.version}" for row in examples)
        raise SecretUnreadable(
            f"stored secrets were sealed under another master key: key id {under}, which this server "
            f"does not hold (e.g. {named}); it holds {self._keyring.describe()}, the current one from "
            f"{self._keyring.source or 'its settings'}: start with the key that sealed them as "
            "OUTPOST_SECRETS__MASTER_KEY or in OUTPOST_SECRETS__PREVIOUS_MASTER_KEYS"
        )

    async def holdings(self, conn: Connection) -> list[KeyHolding]:
        """Live secrets per master key: every key this server holds (with 0 when none), then the keys
        it lacks that rows were sealed under."""
        counts = await repo.count_live_by_key(conn)
        lacking = sorted(key_id for key_id in counts if key_id not in self._keyring.key_ids)
        return [
            KeyHolding(key_id, self._keyring.role_of(key_id), counts.get(key_id, 0))
            for key_id in (*self._keyring.key_ids, *lacking)
        ]

    async def store(
        self, conn: Connection, tenant_id: str, name: str, value: SecretStr, *, retire_older: bool
    ) -> int:
        """Seal `value` under the current master key as the newest version of the secret; returns that
        version. With `retire_older`, every older version is retired in the same transaction."""
        remember_secret(value)
        version = await repo.latest_version(conn, tenant_id, name) + 1
        context = secret_context(tenant_id, name, version)
        key_id, sealed = self._keyring.seal(value.get_secret_value().encode(), context)
        now = utc_now()
        row = SecretRow(new_ulid(), tenant_id, name, version, key_id, sealed, now, None)
        await repo.insert_secret(conn, row)
        if retire_older:
            await repo.retire_versions(conn, tenant_id, name, now, below_version=version)
        return version

    async def current(self, conn: Connection, tenant_id: str, name: str) -> tuple[int, SecretStr] | None:
        """The newest live version and its value; None when there is none. Raises SecretUnreadable when
        it was sealed under a master key this server does not hold, or does not decrypt."""
        live = await repo.live_versions(conn, tenant_id, name)
        if not live:
            return None
        newest = live[0]
        context = secret_context(tenant_id, name, newest.version)
        plain = self._keyring.open(newest.sealed, context, newest.key_id)
        try:
            value = SecretStr(plain.decode())
        except UnicodeDecodeError:
            raise SecretUnreadable(f"the stored secret {name!r} is not text") from None
        remember_secret(value)
        return newest.version, value

    async def current_version(self, conn: Connection, tenant_id: str, name: str) -> int | None:
        """The newest live version, without decrypting it."""
        live = await repo.live_versions(conn, tenant_id, name)
        return live[0].version if live else None

    async def versions(self, conn: Connection, tenant_id: str, name: str) -> list[SecretVersion]:
        """The live versions, newest (the one in force) first; nothing is decrypted."""
        live = await repo.live_versions(conn, tenant_id, name)
        return [SecretVersion(row.version, row.created_at) for row in live]

    async def live_names(self, conn: Connection, tenant_id: str, prefix: str) -> list[str]:
        """The names under `prefix` (such as `git/`) that have a live version, sorted; nothing is
        decrypted."""
        return await repo.live_names(conn, tenant_id, prefix)

    async def retire(self, conn: Connection, tenant_id: str, name: str) -> int:
        """Retire every live version; returns how many there were."""
        return await repo.retire_versions(conn, tenant_id, name, utc_now())

    async def retire_version(self, conn: Connection, tenant_id: str, name: str, version: int) -> bool:
        """Retire one live version (its ciphertext is erased); False when it is not live. Retiring the
        newest puts the next older live version in force."""
        return await repo.retire_version(conn, tenant_id, name, version, utc_now())


def secret_context(tenant_id: str, name: str, version: int) -> bytes:
    """The associated data a secret's ciphertext is bound to: where it is stored."""
    return f"{tenant_id}\0{name}\0{version}".encode()
