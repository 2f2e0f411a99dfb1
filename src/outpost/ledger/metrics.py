"""Prometheus counters of what the ledger settled: tokens, cost in USD, and the settled dispatches
themselves (outcome, failure reason, duration).

Each server counts what it settled itself, from zero at its start (Prometheus' `rate()` and `increase()`
handle restarts); the ledger in the database is the record, these are for dashboards and alerts. The
counters live in a registry of their own, so two servers in one process (tests) never share them.
Settlement is where every dispatch ends (run finished, cancelled, worker lost), once, so each is
counted once.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from outpost.db.repositories.dispatches import DispatchRow
from outpost.db.repositories.ledger import LedgerEntry
from outpost.domain.dispatch import DispatchStatus

TOKEN_KINDS = ("input", "output", "cache_read", "cache_write")
# Agent runs last from seconds to hours (timeouts reach a day): buckets spread over that range.
DURATION_BUCKETS_S = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800, 86400)
_FAILED = frozenset({DispatchStatus.FAILED, DispatchStatus.TIMED_OUT})
_OUTCOMES = _FAILED | {DispatchStatus.SUCCEEDED}


class LedgerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._tokens = Counter(
            "outpost_tokens", "Model tokens metered by the gateway, counted when their dispatch settles.",
            ["kind", "agent", "model", "tenant"], registry=self.registry,
        )  # fmt: skip
        self._cost = Counter(
            "outpost_cost_usd", "Cost written to the ledger in USD: tokens, compute and storage.",
            ["kind", "agent", "model", "tenant"], registry=self.registry,
        )  # fmt: skip
        self._finished = Counter(
            "outpost_dispatches_finished", "Dispatches that ended, by final status.",
            ["agent", "status"], registry=self.registry,
        )  # fmt: skip
        self._failures = Counter(
            "outpost_dispatch_failures", "Dispatches that failed or timed out, by failure reason.",
            ["agent", "reason"], registry=self.registry,
        )  # fmt: skip
        self._durations = Histogram(
            "outpost_dispatch_duration_seconds",
            "Start to end of dispatches that ran to an outcome (succeeded, failed, timed out).",
            ["agent"], buckets=DURATION_BUCKETS_S, registry=self.registry,
        )  # fmt: skip

    def count(self, entries: Iterable[LedgerEntry]) -> None:
        """Add ledger rows that were just committed."""
        for entry in entries:
            agent, model = entry.agent or "", entry.model or ""
            if entry.kind == "tokens":
                for kind in TOKEN_KINDS:
                    tokens = getattr(entry, f"{kind}_tokens")
                    if tokens:
                        self._tokens.labels(kind, agent, model, entry.tenant_id).inc(tokens)
            if entry.cost_micro_usd:
                self._cost.labels(entry.kind, agent, model, entry.tenant_id).inc(entry.cost_micro_usd / 1e6)

    def count_finished(self, row: DispatchRow) -> None:
        """Add a dispatch whose terminal state was just committed."""
        status = DispatchStatus(row.status)
        self._finished.labels(row.agent, status.value).inc()
        if status in _FAILED:
            self._failures.labels(row.agent, row.failure_reason or "internal").inc()
        if status in _OUTCOMES and row.started_at is not None and row.finished_at is not None:
            # Start and end may be stamped by different machines: a skewed clock must not go negative.
            self._durations.labels(row.agent).observe(
                max(0.0, (row.finished_at - row.started_at).total_seconds())
            )

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
