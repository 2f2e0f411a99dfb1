"""The master key check a server runs before it listens, so that a missing or wrong key is one clear line.

Three cases stop the start: the key is malformed or its file unsafe or unreadable (MasterKeyError from
loading it); no key is set and no key file exists while the database already holds secrets (a new key
would open none of them, so none is made); or live secrets were sealed under a key the server does not
hold (SecretUnreadable naming the key ids). Nothing is decrypted to find this out: each row names the key
that sealed it.
"""

from __future__ import annotations

from outpost.db.migrate import upgrade_to_head
from outpost.db.repositories import secrets as repo
from outpost.db.store import Store
from outpost.secrets.keyring import MasterKeyring
from outpost.secrets.master_key import MasterKeyMissing, load_keyring
from outpost.secrets.vault import SecretVault
from outpost.settings import Settings


async def check_master_keys(settings: Settings) -> None:
    """Migrate the database, load the master keys (making the key file on a first start) and check
    that they open every live secret. Raises MasterKeyError, SecretUnreadable or StoreUnavailable."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)  # where the default database lives
    store = Store(settings.resolved_database_url)
    try:
        await upgrade_to_head(store)
        keyring = await _load_or_create(settings, store)
        async with store.read() as conn:
            await SecretVault(keyring).check_key(conn)
    finally:
        await store.dispose()


async def _load_or_create(settings: Settings, store: Store) -> MasterKeyring:
    secrets, key_file = settings.secrets, settings.resolved_master_key_file
    try:
        return load_keyring(secrets.master_key, secrets.previous_master_keys, key_file, create=False)
    except MasterKeyMissing as exc:
        async with store.read() as conn:
            counts = await repo.count_live_by_key(conn)
        if counts:
            sealed_under = ", ".join(sorted(counts))
            raise MasterKeyMissing(
                f"{exc.detail}. The database holds {sum(counts.values())} live secrets sealed under master "
                f"key id {sealed_under}: a new key would open none of them, so none was made"
            ) from None
    return load_keyring(secrets.master_key, secrets.previous_master_keys, key_file, create=True)
