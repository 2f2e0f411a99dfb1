"""Which queued dispatches a claim takes, and why the others wait.

A claim takes the oldest due dispatches (`not_before` unset or past), skipping over, not stopping at,
those it must not take yet:

- **Tenant cap.** A tenant with `max_concurrent_dispatches` never has more dispatches provisioning or
  running at once. The claim counts them under a per-tenant lock (see `claims.try_lock_tenant`), so
  claimers on several workers cannot overshoot together. Its other queued dispatches wait in order.
- **Provider quota.** A dispatch whose model's provider account (the tenant's own key, else the
  server's) is out of quota waits until the quota's end (`not_before`), or fails over as its `failover`
  allows, with a note in its `provisioning` status event: with `accounts`, to the same model on the
  server's key (recorded in its stored `failover`, for the worker to send that key); else to the first of
  its fallback models whose account is not out of quota.

Each held dispatch gets the reason in `queue_reason` and one status event (`queued`, with `note` and
`held`) when the reason changes, never more: an SSE client sees why, once.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from outpost.agents.catalog import Catalog, ModelChoice, resolve_model
from outpost.db.repositories import claims as claim_repo
from outpost.db.repositories import dispatches as dispatch_repo
from outpost.db.repositories import events as event_repo
from outpost.db.repositories import fleet_claims
from outpost.db.repositories import quotas as quota_repo
from outpost.db.repositories import tenant_providers as tenant_provider_repo
from outpost.db.repositories.dispatches import DispatchRow
from outpost.db.repositories.events import EventRow
from outpost.db.repositories.tenant_providers import TenantProviderRow
from outpost.db.store import Connection, Dialect
from outpost.db.types import utc_now
from outpost.domain.dispatch import DispatchStatus, Tier
from outpost.domain.quotas import (
    SERVER_ACCOUNT,
    HoldKind,
    account_failover_note,
    failover_note,
    iso_utc,
    provider_account,
    quota_reason,
    tenant_cap_reason,
)
from outpost.errors import InvalidInput
from outpost.schemas.failover import account_taken, requested_failover, with_account_taken
from outpost.services.failover import Fallback, fallbacks
from outpost.services.lifecycle import transition

MAX_ROUNDS = 50
"""Candidate batches one claim looks through at most; each round claims, holds or skips what it read,
so the rest is only left for the next claim when hundreds of dispatches are held at once."""
HOLD_BATCH = 500
"""Dispatches of one tenant given the cap's reason per claim at most."""


@dataclass(frozen=True, slots=True)
class Admitted:
    claimed: list[DispatchRow]
    """Moved to `provisioning` with a new attempt, in the order they were queued."""
    held: list[DispatchRow]
    """Given a new reason to wait, each with its status event."""
    contended: bool = False
    """Another claimer (or a release, `FleetRuns.release_held`) held a tenant's claim lock: what it
    left unclaimed may be claimable in a moment."""


class Admission:
    def __init__(self, catalog: Catalog, server_keys: Collection[str] = ()) -> None:
        """`server_keys`: the providers the server has a key of its own for (the accounts a dispatch
        whose `failover` sets `accounts` may move onto)."""
        self._catalog = catalog
        self._server_keys = frozenset(server_keys)

    async def claim(self, conn: Connection, dialect: Dialect, limit: int) -> Admitted:
        """Inside the caller's write transaction: claim up to `limit` dispatches, hold back the others
        that are not to run yet. The caller publishes both lists' events once it has committed. Store
        errors pass through (the transaction is then rolled back whole)."""
        claim = _Claim(conn, dialect, self._catalog, self._server_keys, utc_now())
        return await claim.run(limit)

    async def claim_one(
        self, conn: Connection, dialect: Dialect, dispatch_id: str, worker_id: str
    ) -> Admitted:
        """Inside the caller's write transaction: claim that one dispatch for `worker_id` (recorded on the
        dispatch), under the rules of `claim`, if it is queued and due; a dispatch that may not run yet
        is held back as `claim` would hold it. Nothing is claimed or held when it is not queued or not
        due. The caller publishes both lists' events once it has committed."""
        claim = _Claim(conn, dialect, self._catalog, self._server_keys, utc_now(), worker_id)
        return await claim.run_one(dispatch_id)


@dataclass(slots=True)
class _Slots:
    """A tenant's room for more dispatches in this claim."""

    cap: int | None
    free: int | None
    """None: no cap."""
    locked_out: bool = False
    """Another claimer holds the tenant's lock: its dispatches are left to that claimer."""


@dataclass(frozen=True, slots=True)
class _Plan:
    values: dict[str, Any] = field(default_factory=dict)
    note: str | None = None


class _Claim:
    """One claim's pass over the queue, and what it learnt of tenants and quotas on the way."""

    def __init__(
        self,
        conn: Connection,
        dialect: Dialect,
        catalog: Catalog,
        server_keys: frozenset[str],
        now: datetime,
        worker_id: str | None = None,
    ) -> None:
        self._conn = conn
        self._claimer: dict[str, Any] = {"worker_id": worker_id} if worker_id is not None else {}
        self._dialect = dialect
        self._catalog = catalog
        self._server_keys = server_keys
        self._now = now
        self._slots: dict[str, _Slots] = {}
        self._caps_read: dict[str, int | None] = {}
        self._skipped: set[str] = set()
        self._own: dict[str, dict[str, TenantProviderRow]] = {}
        self._exhausted: dict[tuple[str, str], datetime] | None = None
        self._claimed: list[DispatchRow] = []
        self._held: list[DispatchRow] = []

    async def run(self, limit: int) -> Admitted:
        for _ in range(MAX_ROUNDS):
            wanted = limit - len(self._claimed)
            if wanted <= 0:
                break
            rows = await dispatch_repo.select_queued(
                self._conn, self._dialect, wanted, self._now, self._skipped
            )
            if not rows:
                break
            for row in rows:
                await self._consider(row)
        await self._hold_full_tenants()
        return Admitted(self._claimed, self._held)

    async def run_one(self, dispatch_id: str) -> Admitted:
        locked = await fleet_claims.lock_queued(self._conn, self._dialect, dispatch_id, self._now)
        if locked is not None:
            self._caps_read[locked.row.tenant_id] = locked.tenant_cap
            await self._consider(locked.row)
        await self._hold_full_tenants()
        contended = any(slots.locked_out for slots in self._slots.values())
        return Admitted(self._claimed, self._held, contended)

    async def _consider(self, row: DispatchRow) -> None:
        if row.tenant_id in self._skipped:
            return
        slots = await self._slots_of(row.tenant_id)
        if slots.locked_out or slots.free == 0:
            self._skipped.add(row.tenant_id)  # its queued dispatches get their reason at the end
            return
        plan = await self._plan(row)
        if plan is None:
            return
        claimed = await transition(
            self._conn, row, DispatchStatus.PROVISIONING, note=plan.note,
            attempt=row.attempt + 1, queue_reason=None, not_before=None, **plan.values, **self._claimer,
        )  # fmt: skip
        if claimed is None:
            return
        self._claimed.append(claimed)
        if slots.free is not None:
            slots.free -= 1

    async def _slots_of(self, tenant_id: str) -> _Slots:
        slots = self._slots.get(tenant_id)
        if slots is None:
            cap = await self._cap_of(tenant_id)
            if cap is None:
                slots = _Slots(None, None)
            elif not await claim_repo.try_lock_tenant(self._conn, self._dialect, tenant_id):
                slots = _Slots(cap, 0, locked_out=True)
            else:
                # Read again and counted under the lock: every claim, and every cap change released
                # (`FleetRuns.release_held`), committed before it was taken is seen.
                cap = await claim_repo.tenant_cap(self._conn, tenant_id)
                active = await claim_repo.count_active(self._conn, tenant_id)
                slots = _Slots(cap, None if cap is None else max(0, cap - active))
            self._slots[tenant_id] = slots
        return slots

    async def _cap_of(self, tenant_id: str) -> int | None:
        """The tenant's cap as read already with its dispatch, else as read now."""
        if tenant_id in self._caps_read:
            return self._caps_read.pop(tenant_id)
        return await claim_repo.tenant_cap(self._conn, tenant_id)

    async def _plan(self, row: DispatchRow) -> _Plan | None:
        """How to claim `row`: as it is, on the server's key, or on a fallback model. None: it waits for a
        quota (held)."""
        choice = self._model_of(row)
        if choice is None:
            return _Plan()
        exhausted = await self._exhausted_quotas()
        account = await self._account(row.tenant_id, choice.provider)
        until = exhausted.get((account, choice.provider))
        if until is None:
            return _on_account(row, None)
        if await self._may_take_server_key(row, choice.provider, exhausted):
            return _on_account(row, SERVER_ACCOUNT, account_failover_note(choice.provider, until))
        fallback = await self._free_fallback(row, exhausted)
        if fallback is None:
            await self._hold(row, HoldKind.QUOTA, quota_reason(choice.provider, account, until), until)
            return None
        model, provider = fallback.choice.model.id, fallback.choice.provider
        values: dict[str, Any] = {"model": model, **_on_account(row, None).values}
        if fallback.tier is not None:
            values["tier"] = fallback.tier.value
        return _Plan(values, failover_note(choice.provider, until, model, provider))

    async def _may_take_server_key(
        self, row: DispatchRow, provider: str, exhausted: dict[tuple[str, str], datetime]
    ) -> bool:
        """Whether the dispatch may run on the server's key for `provider` instead of its tenant's own:
        its failover sets `accounts`, the server has a key not out of quota, and the tenant's calls go to
        the server's base URL (an admin who gave the tenant a URL of its own chose where they go)."""
        spec = requested_failover(row.failover)
        if spec is None or not spec.accounts:
            return False
        if provider not in self._server_keys or (SERVER_ACCOUNT, provider) in exhausted:
            return False
        own = (await self._own_settings(row.tenant_id)).get(provider)
        return own is not None and own.base_url is None

    async def _free_fallback(
        self, row: DispatchRow, exhausted: dict[tuple[str, str], datetime]
    ) -> Fallback | None:
        """The first of the dispatch's fallbacks whose provider account is not out of quota."""
        for fallback in fallbacks(self._catalog, row.agent, row.failover):
            provider = fallback.choice.provider
            if (await self._account(row.tenant_id, provider), provider) not in exhausted:
                return fallback
        return None

    def _model_of(self, row: DispatchRow) -> ModelChoice | None:
        """The model the dispatch would run; None for agents without one, and for a model the catalog no
        longer has (the run then fails as it starts, saying so)."""
        try:
            return resolve_model(self._catalog, row.agent, Tier(row.tier), row.model)
        except (InvalidInput, ValueError):
            return None

    async def _exhausted_quotas(self) -> dict[tuple[str, str], datetime]:
        if self._exhausted is None:
            rows = await quota_repo.list_exhausted(self._conn, self._now)
            self._exhausted = {(row.account, row.provider): row.exhausted_until for row in rows}
        return self._exhausted

    async def _account(self, tenant_id: str, provider: str) -> str:
        return provider_account(tenant_id, provider in await self._own_settings(tenant_id))

    async def _own_settings(self, tenant_id: str) -> dict[str, TenantProviderRow]:
        """The tenant's own provider settings, by provider (read once per claim)."""
        own = self._own.get(tenant_id)
        if own is None:
            rows = await tenant_provider_repo.list_tenant_providers(self._conn, tenant_id)
            own = self._own[tenant_id] = {found.provider: found for found in rows}
        return own

    async def _hold(self, row: DispatchRow, kind: HoldKind, reason: str, not_before: datetime) -> None:
        if row.queue_reason == reason:
            await claim_repo.set_not_before(self._conn, row.id, not_before)
            return
        values = {"queue_reason": reason, "not_before": not_before}
        held = await dispatch_repo.update_versioned(self._conn, row.id, row.version, values)
        if held is not None:
            await event_repo.insert_events(self._conn, [self._held_event(held, kind)])
            self._held.append(held)

    async def _hold_full_tenants(self) -> None:
        """Give the queued dispatches of each tenant found at its cap the cap's reason (those that do not
        have it yet), so that they show why they wait even when this claim did not read them."""
        for tenant_id, slots in self._slots.items():
            if slots.cap is None or slots.locked_out or slots.free != 0:
                continue
            reason = tenant_cap_reason(slots.cap)
            held = await claim_repo.hold_tenant_queued(
                self._conn, self._dialect, tenant_id, reason, self._now, HOLD_BATCH
            )
            events = [self._held_event(row, HoldKind.TENANT_CAP) for row in held]
            await event_repo.insert_events(self._conn, events)
            self._held.extend(held)

    def _held_event(self, row: DispatchRow, kind: HoldKind) -> EventRow:
        data: dict[str, Any] = {"status": DispatchStatus.QUEUED.value, "attempt": row.attempt}
        data |= {"note": row.queue_reason, "held": kind.value}
        if row.not_before is not None:
            data["not_before"] = iso_utc(row.not_before)
        return EventRow(row.id, row.event_seq, utc_now(), "status", data)


def _on_account(row: DispatchRow, account: str | None, note: str | None = None) -> _Plan:
    """A claim of `row` on `account` (None: its tenant's own account, the one in force): its stored
    failover then says so, for the worker to send that account's key. A retry claimed again sets it
    afresh, so a dispatch goes back to its tenant's key once that one is no longer out of quota."""
    if account_taken(row.failover) == account:
        return _Plan(note=note)
    return _Plan({"failover": with_account_taken(row.failover, account)}, note)
