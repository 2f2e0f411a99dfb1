"""Appending to the audit log, inside the caller's transaction.

An append locks the chain's head, writes the next seq and moves the head, in the transaction of the
action it records: the action and its row commit together, and an action rolled back leaves no row. The
lock serialises every audited transaction from the append to its commit, so services append last, after
every other statement (which also means no other lock is ever taken while the head is held: no deadlock).

The head is sealed (`ChainKey.head_mac`) each time it moves, under the current key, but only when the
head it moves from was sealed under one of the keys: a head moved back without the key (rows cut off the
end) stays unsealed, so `outpost audit verify` still finds it after the log grows again.
"""

from __future__ import annotations

from collections.abc import Sequence

from outpost.audit.chain import AuditEntry, AuditHead, AuditRecord, ChainKey, seal
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
        head = await repo.lock_head(conn)
        seq, prev_hash = head.seq, head.hash
        created_at = utc_now()  # under the lock: times follow seq unless the clock steps back
        records: list[AuditRecord] = []
        for entry in entries:
            seq += 1
            records.append(seal(self.key, entry, seq=seq, prev_hash=prev_hash, created_at=created_at))
            prev_hash = records[-1].hash
        await repo.append_records(conn, records, self._moved_head_mac(head, records[-1]))
        return records

    def seals(self, head: AuditHead) -> bool:
        """Whether one of the keys (the current one or a previous one) sealed `head`."""
        return any(key.seals(head) for key in self.keys)

    def _moved_head_mac(self, head: AuditHead, last: AuditRecord) -> str | None:
        """The seal of the head moved to `last`; None (the head's mac left as it is) when the head it moves
        from is not sealed: sealing it now would vouch for a head someone else may have moved."""
        return self.key.head_mac(last.seq, last.hash) if self.seals(head) else None

    async def record(self, store: Store, entries: Sequence[AuditEntry]) -> list[AuditRecord]:
        """Append `entries` in a transaction of their own: for what changes nothing in the database (a
        refused key, a secret decrypted for a run)."""
        async with store.write() as conn:
            return await self.append(conn, *entries)
