"""Moving stored secrets under the current master key, and telling which key holds how many.

`reseal_secrets` opens each live row sealed under a previous key and seals it again under the current
one, in batches, each batch in its own short transaction: it can be stopped at any point and run again
(a re-sealed row is not touched twice), and it can run while servers are up. A row a server retires or
re-seals meanwhile is left as that server wrote it (the update checks the row is still as it was read).
The plaintext and the associated data stay the same, so a re-sealed row reads exactly as before.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from outpost.db.repositories import secrets as repo
from outpost.db.repositories.secrets import SecretRow
from outpost.db.store import Connection, Store
from outpost.secrets.box import SecretUnreadable
from outpost.secrets.keyring import KeyHolding, MasterKeyring
from outpost.secrets.vault import SecretVault, secret_context

DEFAULT_BATCH_SIZE = 200


@dataclass(slots=True)
class ResealReport:
    resealed: int = 0
    unreadable: list[str] = field(default_factory=list)
    """Rows that did not decrypt under the key they name (changed in the database): left as they are."""


async def key_holdings(store: Store, keyring: MasterKeyring) -> list[KeyHolding]:
    """Live secrets per master key (see `SecretVault.holdings`)."""
    async with store.read() as conn:
        return await SecretVault(keyring).holdings(conn)


async def reseal_secrets(
    store: Store,
    keyring: MasterKeyring,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_batch: Callable[[int], None] | None = None,
) -> ResealReport:
    """Seal every live secret under the current master key; `on_batch(n)` after each committed batch.
    Raises SecretUnreadable before changing anything when rows were sealed under a key this keyring
    lacks (naming the key ids); rows that do not decrypt are listed in the report, not changed."""
    async with store.read() as conn:
        await SecretVault(keyring).check_key(conn)
    report, after_id = ResealReport(), ""
    while True:
        async with store.write() as conn:
            rows = await repo.live_rows_not_under(conn, keyring.key_id, after_id, batch_size)
            done = sum([await _reseal_row(conn, keyring, row, report) for row in rows])
        if not rows:
            return report
        after_id = rows[-1].id
        report.resealed += done
        if on_batch is not None:
            on_batch(done)


async def _reseal_row(conn: Connection, keyring: MasterKeyring, row: SecretRow, report: ResealReport) -> bool:
    context = secret_context(row.tenant_id, row.name, row.version)
    try:
        plain = keyring.open(row.sealed, context, row.key_id)
    except SecretUnreadable:
        report.unreadable.append(f"tenant {row.tenant_id} {row.name} v{row.version} (key id {row.key_id})")
        return False
    key_id, sealed = keyring.seal(plain, context)
    return await repo.replace_sealed(conn, row, key_id, sealed)
