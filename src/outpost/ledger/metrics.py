"""Prometheus counters of what the ledger settled: tokens, and cost in USD.

Each server counts what it settled itself, from zero at its start (Prometheus' `rate()` and `increase()`
handle restarts); the ledger in the database is the record, these are for dashboards and alerts. The
counters live in a registry of their own, so two servers in one process (tests) never share them.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

from outpost.db.repositories.ledger import LedgerEntry

TOKEN_KINDS = ("input", "output", "cache_read", "cache_write")


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

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
