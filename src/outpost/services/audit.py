"""The audit log's use cases: reading pages of it, verifying the whole chain, and retention.

Retention keeps `audit_days` (one year by default). Once a day (the cut is the start of a UTC day, so the
sweeps of one day agree on it and record one cut), it appends an `audit.pruned` row naming the last row
to go and its hash, then deletes the rows up to it, oldest first, in short transactions. Verification
starts after such a cut: the first row left links to the recorded hash, and while a deletion is part-way
the rows not yet deleted must still lead to it.

The head's seal (see `outpost.audit.log`) is made at start for a head that has none: a database from
before heads were sealed, or a new one. That trusts the head as it stands on first use; every later move
of the head must then come from an append that holds the key.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

from outpost.audit import entries
from outpost.audit.chain import AuditHead, AuditRecord
from outpost.audit.log import AuditLog
from outpost.audit.verify import (
    AuditKeyMismatch,
    ChainBroken,
    check_head,
    check_head_seal,
    start_of,
    verifying_key,
    walk,
)
from outpost.db.repositories import audit as repo
from outpost.db.store import Connection, Store
from outpost.errors import PermissionDenied
from outpost.services.keys import Principal

log = logging.getLogger(__name__)

PRUNE_BATCH = 5000
"""Rows deleted per transaction by retention."""


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """A chain that verified: how many rows, from which seq to which, and the head's hash."""

    rows: int
    first_seq: int | None
    last_seq: int
    head_hash: str


class AuditService:
    def __init__(self, store: Store, log: AuditLog, retention_days: int) -> None:
        self._store = store
        self.log = log
        """The chain itself: services append to it in their own transactions."""
        self._retention = timedelta(days=retention_days)

    async def list_page(
        self, caller: Principal, *, after: int, limit: int, tenant_id: str | None
    ) -> tuple[list[AuditRecord], int | None]:
        """Rows after seq `after`, oldest first, and the `after` of the next page (None on the last).
        A tenant key reads its tenant's rows; an admin key every row, or one tenant's. Raises
        PermissionDenied when a tenant key asks for another tenant."""
        if not caller.is_admin:
            if tenant_id not in (None, caller.tenant_id):
                raise PermissionDenied("only an admin key can read another tenant's audit log")
            tenant_id = caller.tenant_id
        async with self._store.read() as conn:
            rows = await repo.list_page(conn, tenant_id=tenant_id, after=after, limit=limit)
        return rows, rows[-1].seq if len(rows) == limit else None

    async def check_key(self) -> None:
        """Raises AuditKeyMismatch when the chain's last row does not verify under this master key: a
        server started with another key would otherwise extend the log with rows that never verify."""
        async with self._store.read() as conn:
            head_seq = (await repo.read_head(conn)).seq
            last = await repo.raw_row(conn, head_seq) if head_seq else None
        if last is not None and verifying_key(self.log.keys, last) is None:
            raise AuditKeyMismatch(
                f"the audit log's last row (seq {head_seq}) does not verify under this server's master keys: "
                "it was written with another one (start with that key as OUTPOST_SECRETS__MASTER_KEY, or "
                "in OUTPOST_SECRETS__PREVIOUS_MASTER_KEYS after a rotation), or the row was edited "
                "(`outpost audit verify` tells)"
            )

    async def seal_head(self) -> None:
        """Seal the head if it has never been sealed (run at start, after `check_key`): trust on first use
        for a database from before heads were sealed, logged as a warning when it already holds rows.
        Logs an error when the head carries a seal no key makes (`outpost audit verify` tells more)."""
        async with self._store.write() as conn:
            head = await repo.lock_head(conn)  # a server starting beside this one waits, then sees the seal
            if head.mac is None:
                await repo.set_head_mac(conn, self.log.key.head_mac(head.seq, head.hash))
        if head.mac is None and head.seq:
            log.warning(
                "sealed the audit log's head at seq %d, which was not sealed: trusting that no rows were "
                "cut off its end before now (expected once, after the upgrade that seals heads)", head.seq,
            )  # fmt: skip
        elif head.mac is not None and not self.log.seals(head):
            log.error(
                "the audit log's head at seq %d is not sealed by the audit key: rows may have been cut off "
                "its end; run `outpost audit verify`", head.seq,
            )  # fmt: skip

    async def verify(self) -> VerifyReport:
        """Walk the whole chain in one snapshot. Raises ChainBroken naming the first row that does not
        verify and why, or the head when it is not sealed; AuditKeyMismatch when no row checked verifies
        (the wrong master key)."""
        async with self._store.read() as conn:
            await repo.begin_snapshot(conn)
            head = await repo.read_head(conn)
            first = await repo.first_seq(conn)
            if first is None:
                return self._empty_log(head)
            await self._probe_key(conn, first, head.seq)
            start = start_of(first, await repo.checkpoints(conn) if first > 1 else [])
            result = await repo.stream(conn, lambda rows: walk(rows, self.log.keys, start))
        check_head(result, head.seq, head.hash)
        check_head_seal(head, self.log.keys)
        return VerifyReport(result.rows, first, result.last_seq, head.hash)

    def _empty_log(self, head: AuditHead) -> VerifyReport:
        """The report on a log without rows. Raises ChainBroken when its head says rows were written, or
        is not sealed."""
        if head.seq:
            raise ChainBroken(1, f"the log is empty but its head is at seq {head.seq}: rows were deleted")
        check_head_seal(head, self.log.keys)
        return VerifyReport(0, None, 0, head.hash)

    async def prune(self, now: datetime) -> int:
        """Delete the rows older than the retention period (see the module docstring); returns how many.
        Servers pruning at the same moment may each record the cut; their records agree."""
        cutoff = datetime.combine((now - self._retention).date(), time(), tzinfo=UTC)
        async with self._store.write() as conn:
            first, through = await repo.first_seq(conn), await repo.last_seq_before(conn, cutoff)
            if first is None or through is None or through < first:
                return 0
            last_hash = await repo.row_hash(conn, through) or ""
            await self.log.append(conn, entries.audit_pruned(through, last_hash, through - first + 1, cutoff))
        deleted = 0
        for batch_first in range(first, through + 1, PRUNE_BATCH):
            async with self._store.write() as conn:
                deleted += await repo.delete_range(
                    conn, batch_first, min(through, batch_first + PRUNE_BATCH - 1)
                )
        return deleted

    async def _probe_key(self, conn: Connection, first: int, last: int) -> None:
        """Raises AuditKeyMismatch when the first and the last row both fail to verify: the whole log
        failing is the wrong key far more likely than two edits (one row alone cannot tell)."""
        if first == last:
            return
        rows = [await repo.raw_row(conn, seq) for seq in (first, last)]
        if all(row is not None and verifying_key(self.log.keys, row) is None for row in rows):
            raise AuditKeyMismatch(
                f"no audit row checked verifies under the master keys given (seq {first} and {last}): the "
                "log was written with another key; give the server's OUTPOST_SECRETS__MASTER_KEY or master "
                "key file (and, after a rotation, the old key in OUTPOST_SECRETS__PREVIOUS_MASTER_KEYS)"
            )
