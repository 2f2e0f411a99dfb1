"""Usage reports: what the ledger holds, summed by agent, model, UTC day or tenant."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta

from outpost.db.repositories import ledger as repo
from outpost.db.repositories.ledger import COST_KINDS, QUANTITIES, UsageTotals
from outpost.db.store import Store
from outpost.errors import InvalidInput, PermissionDenied
from outpost.ledger.prices import GIB, HOUR_S, MICRO, USEC_PER_S
from outpost.schemas.usage import GroupBy, UsageAmounts, UsageGroup, UsageReport
from outpost.services.keys import Principal


class UsageService:
    def __init__(self, store: Store, prices_version: str) -> None:
        self._store = store
        self._prices_version = prices_version

    async def report(
        self, caller: Principal, group_by: GroupBy, since: date | None, until: date | None
    ) -> UsageReport:
        """The caller's tenant's usage (an admin key's: every tenant's), by `group_by`, for the UTC days
        from `since` to `until` inclusive (either open). Raises PermissionDenied when a tenant key asks
        for `tenant` grouping, InvalidInput when `until` is before `since`."""
        if group_by == "tenant" and not caller.is_admin:
            raise PermissionDenied("only an admin key can see usage by tenant")
        if since is not None and until is not None and until < since:
            raise InvalidInput(f"until ({until}) is before since ({since})", field="until")
        async with self._store.read() as conn:
            found = await repo.usage_totals(
                conn, self._store.dialect, group_by, None if caller.is_admin else caller.tenant_id,
                _day_start(since), _day_after(until),
            )  # fmt: skip
        groups = sorted((_group(totals) for totals in found), key=_order_key(group_by))
        return UsageReport(
            group_by=group_by, since=since, until=until, prices=self._prices_version, groups=groups,
            total=_amounts(_summed(found)),
        )  # fmt: skip


def _day_start(day: date | None) -> datetime | None:
    return datetime.combine(day, time(), tzinfo=UTC) if day is not None else None


def _day_after(day: date | None) -> datetime | None:
    """The end of `day` (exclusive); None for no end, or the last day there is."""
    return _day_start(day + timedelta(days=1)) if day is not None and day < date.max else None


def _order_key(group_by: GroupBy) -> Callable[[UsageGroup], tuple[float, bool, str]]:
    """Days in order; other groups by cost, the largest first (rows without a key last)."""
    if group_by == "day":
        return lambda group: (0.0, False, group.key or "")
    return lambda group: (-group.cost_usd, group.key is None, group.key or "")


def _summed(found: list[UsageTotals]) -> UsageTotals:
    return UsageTotals(
        key=None, name=None,
        quantities={name: sum(totals.quantities[name] for totals in found) for name in QUANTITIES},
        cost_micro_usd={kind: sum(totals.cost_micro_usd[kind] for totals in found) for kind in COST_KINDS},
    )  # fmt: skip


def _amounts(totals: UsageTotals) -> UsageAmounts:
    quantities, cost = totals.quantities, totals.cost_micro_usd
    return UsageAmounts(
        input_tokens=quantities["input_tokens"], output_tokens=quantities["output_tokens"],
        cache_read_tokens=quantities["cache_read_tokens"],
        cache_write_tokens=quantities["cache_write_tokens"],
        vcpu_seconds=quantities["cpu_usec"] / USEC_PER_S,
        memory_gb_seconds=quantities["memory_byte_s"] / GIB,
        storage_gb_hours=quantities["storage_byte_s"] / GIB / HOUR_S,
        tokens_usd=cost["tokens"] / MICRO, compute_usd=cost["compute"] / MICRO,
        storage_usd=cost["storage"] / MICRO, cost_usd=sum(cost.values()) / MICRO,
    )  # fmt: skip


def _group(totals: UsageTotals) -> UsageGroup:
    return UsageGroup(key=totals.key, name=totals.name, **_amounts(totals).model_dump())
