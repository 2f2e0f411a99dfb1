"""Settlement: a dispatch that reached its terminal state becomes ledger rows, in the same transaction.

The rows come from the dispatch's own durable record, its `usage` events (one per model call the
gateway metered) and `compute` events (what its sandbox used), read inside the transaction that makes it
terminal. Events are only appended while a dispatch is not terminal (see `events.reserve_seqs`), so
everything metered before the terminal transition is settled and nothing after it can be: the ledger
agrees with the events exactly, and a dispatch is settled once, because it becomes terminal once.

Compute events are cumulative for the attempt they name (samples while it runs, then the final
measurement): each attempt is charged its last one, and the attempts are added up.

Rows: one `tokens` row per (provider, model priced as) and one `compute` row (zero for a dispatch that
never ran, or whose worker was lost before its first sample); each row is priced and rounded once
(see `prices`). The dispatch's `cost_micro_usd` then becomes the sum of its rows, and its token columns
the sums of its `tokens` rows. Until then (while it runs) they hold the running metered figures.

A call metered under a model the price table no longer has (the catalog changed between the call and
the settlement) is charged what the gateway priced it at when it was made, as its event records.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime

from outpost.db.repositories import ledger as repo
from outpost.db.repositories import reservations as reservations_repo
from outpost.db.repositories.dispatches import DispatchRow
from outpost.db.repositories.ledger import LedgerEntry, MeteredEvent
from outpost.db.store import Connection
from outpost.db.types import utc_now
from outpost.domain.ids import new_ulid
from outpost.ledger.metrics import LedgerMetrics
from outpost.ledger.prices import MICRO, PriceTable, TokenCounts

TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")


@dataclass(frozen=True, slots=True)
class ComputeTotals:
    cpu_usec: int = 0
    memory_byte_s: int = 0


NO_TOKENS = TokenCounts()
NO_COMPUTE = ComputeTotals()


@dataclass(slots=True)
class _ModelUsage:
    counts: TokenCounts = field(default_factory=TokenCounts)
    recorded_micro_usd: int = 0
    """What the gateway priced the calls at when they were made (the fallback price)."""


@dataclass(frozen=True, slots=True)
class Settlement:
    dispatch: DispatchRow
    """The dispatch with its settled totals."""
    entries: list[LedgerEntry]


class Ledger:
    """Settles dispatches at one price table, and counts what was settled once it is committed."""

    def __init__(self, prices: PriceTable, metrics: LedgerMetrics) -> None:
        self.prices = prices
        self.metrics = metrics

    async def settle(self, conn: Connection, row: DispatchRow) -> Settlement:
        """Write the ledger rows of `row`, which the caller has just made terminal in this transaction,
        and its settled totals. Call `published()` once the transaction has committed."""
        # Calls its worker left reserved (it may have died mid-call) no longer hold the tenant's budget.
        await reservations_repo.drop_for_dispatch(conn, row.id)
        events = await repo.metered_events(conn, row.id)
        entries = ledger_rows(row, events, self.prices, utc_now())
        await repo.insert_entries(conn, entries)
        tokens = {name: sum(getattr(entry, name) for entry in entries) for name in TOKEN_FIELDS}
        cost = sum(entry.cost_micro_usd for entry in entries)
        await repo.set_dispatch_totals(conn, row.id, tokens, cost)
        return Settlement(replace(row, cost_micro_usd=cost, **tokens), entries)

    def published(self, settlements: Iterable[Settlement | None]) -> None:
        for settlement in settlements:
            if settlement is not None:
                self.metrics.count(settlement.entries)
                self.metrics.count_finished(settlement.dispatch)


def ledger_rows(
    row: DispatchRow, events: Iterable[MeteredEvent], prices: PriceTable, now: datetime
) -> list[LedgerEntry]:
    """The ledger rows of a terminal dispatch: its `tokens` rows (by provider and model, in the order
    first metered), then its `compute` row."""
    by_model: dict[tuple[str, str], _ModelUsage] = {}
    measured: list[dict[str, object]] = []
    for event in events:
        if event.kind == "usage":
            _add_call(by_model, event.data, row.model)
        elif event.kind == "compute":
            measured.append(event.data)
    compute = charged_compute(measured)
    entries = [
        _entry(row, now, prices.version, "tokens", _tokens_cost(prices, provider, model, usage),
               provider=provider, model=model, counts=usage.counts)
        for (provider, model), usage in by_model.items()
    ]  # fmt: skip
    cost = prices.compute_micro_usd(compute.cpu_usec, compute.memory_byte_s)
    entries.append(_entry(row, now, prices.version, "compute", cost, compute=compute))
    return entries


def charged_compute(measured: Iterable[dict[str, object]]) -> ComputeTotals:
    """The compute to charge, from `compute` events' data in order: each attempt's last (they are
    cumulative for it), summed over attempts. An event naming no attempt (written before samples
    existed, one per attempt) counts on its own."""
    last_of_attempt: dict[int, ComputeTotals] = {}
    unnumbered: list[ComputeTotals] = []
    for data in measured:
        used = ComputeTotals(_count(data, "cpu_usec"), _count(data, "memory_byte_s"))
        attempt = _count(data, "attempt")
        if attempt:
            last_of_attempt[attempt] = used
        else:
            unnumbered.append(used)
    charged = [*last_of_attempt.values(), *unnumbered]
    return ComputeTotals(sum(used.cpu_usec for used in charged), sum(used.memory_byte_s for used in charged))


def _add_call(
    by_model: dict[tuple[str, str], _ModelUsage], data: dict[str, object], default: str | None
) -> None:
    provider = (_text(data, "provider") or "unknown")[:40]  # the columns' widths
    model = (_text(data, "priced_as") or _text(data, "model") or default or "unknown")[:200]
    usage = by_model.setdefault((provider, model), _ModelUsage())
    usage.counts = usage.counts.plus(TokenCounts(*(_count(data, name) for name in TOKEN_FIELDS)))
    recorded = data.get("cost_usd")
    if isinstance(recorded, int | float) and not isinstance(recorded, bool) and recorded > 0:
        usage.recorded_micro_usd += round(recorded * MICRO)  # written as micro-USD / 1e6: exact back


def _tokens_cost(prices: PriceTable, provider: str, model: str, usage: _ModelUsage) -> int:
    table = prices.token_prices(provider, model)
    return table.micro_usd(usage.counts) if table is not None else usage.recorded_micro_usd


def _entry(
    row: DispatchRow,
    now: datetime,
    version: str,
    kind: str,
    cost: int,
    *,
    provider: str | None = None,
    model: str | None = None,
    counts: TokenCounts = NO_TOKENS,
    compute: ComputeTotals = NO_COMPUTE,
) -> LedgerEntry:
    return LedgerEntry(
        id=new_ulid(), tenant_id=row.tenant_id, dispatch_id=row.id, kind=kind, agent=row.agent,
        provider=provider, model=model, input_tokens=counts.input_tokens, output_tokens=counts.output_tokens,
        cache_read_tokens=counts.cache_read_tokens, cache_write_tokens=counts.cache_write_tokens,
        cpu_usec=compute.cpu_usec, memory_byte_s=compute.memory_byte_s, storage_byte_s=0,
        cost_micro_usd=cost, prices=version, period_start=None, occurred_at=now,
    )  # fmt: skip


def _count(data: dict[str, object], key: str) -> int:
    """A non-negative integer quantity from event data; anything else counts as none."""
    value = data.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _text(data: dict[str, object], key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) and value else None
