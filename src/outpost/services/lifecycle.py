"""Status transitions: a versioned UPDATE plus the status event recording it, in the caller's transaction.

The caller publishes `event_notice(updated)` on the event bus once its transaction has committed.
"""

from __future__ import annotations

from typing import Any

from outpost.db.repositories import dispatches as dispatch_repo
from outpost.db.repositories import events as event_repo
from outpost.db.repositories.dispatches import DispatchRow
from outpost.db.repositories.events import EventRow
from outpost.db.store import Connection
from outpost.db.types import utc_now
from outpost.domain.dispatch import DispatchStatus, FailureReason, can_transition
from outpost.errors import Conflict
from outpost.events.base import EventNotice


async def transition(
    conn: Connection,
    row: DispatchRow,
    target: DispatchStatus,
    *,
    reason: FailureReason | None = None,
    detail: str | None = None,
    note: str | None = None,
    **values: Any,
) -> DispatchRow | None:
    """Move `row` to `target` if nobody changed it since it was read; None when that race was lost.

    Raises Conflict when the lifecycle forbids the move (for example, out of a terminal state).
    """
    if not can_transition(DispatchStatus(row.status), target):
        raise Conflict(f"dispatch {row.id} is {row.status} and cannot become {target}")
    now = utc_now()
    if target.is_terminal:
        values.setdefault("finished_at", now)
    if reason is not None:
        values.update(failure_reason=reason, failure_detail=detail)
    updated = await dispatch_repo.update_versioned(conn, row.id, row.version, {"status": target, **values})
    if updated is None:
        return None
    data: dict[str, Any] = {"status": target.value, "attempt": updated.attempt}
    if reason is not None:
        data.update(reason=reason.value, detail=detail)
    if note is not None:
        data["note"] = note
    if updated.exit_code is not None and target.is_terminal:
        data["exit_code"] = updated.exit_code
    event = EventRow(dispatch_id=row.id, seq=updated.event_seq, created_at=now, kind="status", data=data)
    await event_repo.insert_events(conn, [event])
    return updated


def event_notice(row: DispatchRow) -> EventNotice:
    """The news that `row`'s events, up to its latest, are committed (for the event bus)."""
    return EventNotice(row.tenant_id, row.id, row.event_seq)
