"""Appending to the audit log, inside the caller's transaction.

An append locks the chain's head, writes the next seq and moves the head, in the transaction of the
action it records: the action and its row commit together, and an action rolled back leaves no row. The
lock serialises every audited transaction from the append to its commit, so services append last, after
every other statement (which also means no other lock is ever taken while the head is held: no deadlock).
"""

from __future__ import annotations

from collections.abc import Sequence

from outpost.audit.chain import AuditEntry, AuditRecord, ChainKey, seal
from outpost.db.repositories import audit as repo
from outpost.db.store import Connection, Store
from outpost.db.types import utc_now


class AuditLog:
    """Seals entries into the chain under the chain key of the current master key."""

    def __init__(self, keys: Sequence[ChainKey]) -> None:
        """`keys`: the chain keys of the current master key, then of the previous ones (which only
        verify). Raises ValueError when there is none."""
        if not keys:
            raise ValueError("the audit log needs the chain key of the current master key")
        self.keys = tuple(keys)
        self.key = self.keys[0]

    @classmethod
    def from_master_keys(cls, derived: Sequence[bytes]) -> AuditLog:
        """From the keys HKDF derives for `KEY_PURPOSE` under each master key, the current one first."""
        return cls([ChainKey(key) for key in derived])

    async def append(self, conn: Connection, *entries: AuditEntry) -> list[AuditRecord]:
        """Add `entries` as the next rows, in order, in `conn`'s transaction; returns them. Call it as
        the transaction's last statement."""
        if not entries:
            return []
        seq, prev_hash = await repo.lock_head(conn)
        created_at = utc_now()  # under the lock: times follow seq unless the clock steps back
        records: list[AuditRecord] = []
        for entry in entries:
            seq += 1
            records.append(seal(self.key, entry, seq=seq, prev_hash=prev_hash, created_at=created_at))
            prev_hash = records[-1].hash
        await repo.append_records(conn, records)
        return records

    async def record(self, store: Store, entries: Sequence[AuditEntry]) -> list[AuditRecord]:
        """Append `entries` in a transaction of their own: for what changes nothing in the database (a
        refused key, a secret decrypted for a run)."""
        async with store.write() as conn:
            return await self.append(conn, *entries)
