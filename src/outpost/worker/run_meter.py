"""A run's model usage as the gateway metered it: running totals, cost, and the last provider failure."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, replace
from datetime import datetime

from outpost.agents.catalog import Catalog, ModelChoice, ModelEntry, cost_micro_usd
from outpost.agents.events import Usage
from outpost.gateway.call_bounds import PlannedCall
from outpost.gateway.metering import MeteredCall
from outpost.gateway.upstream_errors import ProviderFailure
from outpost.sandbox.base import EventSink


@dataclass(frozen=True, slots=True)
class FailureSeen:
    provider: str
    failure: ProviderFailure

    def detail(self) -> str:
        text = f"{self.provider} answered {self.failure.status}: {self.failure.message}"
        retry_at = self.failure.retry_at
        return f"{text} (retry after {_iso(retry_at)})" if retry_at is not None else text


class RunMeter:
    """Gateway callbacks for one run. Each metered call is priced by the model the provider says answered
    (a CLI may use a smaller model for side calls), else by the dispatch's model.

    `gave_up` is set when going on is pointless: the provider refused the key (a CLI would retry it for
    minutes), or `max_failures` calls in a row failed; the worker then ends the run with that reason
    rather than let the CLI back off and retry until its timeout."""

    def __init__(
        self, catalog: Catalog, choice: ModelChoice, events: EventSink, max_failures: int = 3
    ) -> None:
        vendors = [vendor for vendor in catalog.vendors.values() if vendor.provider == choice.provider]
        self._prices = {model.id: model for vendor in vendors for model in vendor.models}
        self._default = choice.model
        self._events = events
        self.usage = Usage()
        self.cost_micro_usd = 0
        self.last_failure: FailureSeen | None = None
        self.gave_up = asyncio.Event()
        self._max_failures = max_failures
        self._failures_in_a_row = 0

    def on_usage(self, provider: str, call: MeteredCall) -> None:
        prices = self._price_of(call.model)
        cost = cost_micro_usd(call.usage, prices)
        self.usage = _add(self.usage, call.usage)
        self.cost_micro_usd += cost
        self._failures_in_a_row = 0
        self._events("usage", {
            "provider": provider, "model": call.model, "priced_as": prices.id, **_tokens(call.usage),
            "cost_usd": cost / 1_000_000, "total": _tokens(self.usage),
            "total_cost_usd": self.cost_micro_usd / 1_000_000,
        })  # fmt: skip

    def on_failure(self, provider: str, failure: ProviderFailure) -> None:
        self.last_failure = FailureSeen(provider, failure)
        self._failures_in_a_row += 1
        if failure.kind == "auth" or self._failures_in_a_row >= self._max_failures:
            self.gave_up.set()
        data: dict[str, object] = {"provider": provider, "kind": failure.kind, "status": failure.status}
        data["message"] = failure.message
        if failure.retry_at is not None:
            data["retry_at"] = _iso(failure.retry_at)
        self._events("provider_error", data)

    def bound_micro_usd(self, call: PlannedCall, output_tokens_cap: int) -> int:
        """The most `call` can cost: its input bound at the dearest input price (uncached, cached or
        cache write) plus its output bound, at the prices of the model it names."""
        prices = self._price_of(call.model)
        input_price = max(prices.input, prices.cache_read, prices.cache_write)
        output_tokens = call.output_tokens_bound or output_tokens_cap
        return math.ceil(call.input_tokens_bound * input_price + output_tokens * prices.output)

    def _price_of(self, model: str | None) -> ModelEntry:
        if model is None:
            return self._default
        # Providers answer with dated snapshots ("claude-x-5-20261001"): match the catalog id they extend.
        exact = self._prices.get(model)
        if exact is not None:
            return exact
        prefixed = [entry for name, entry in self._prices.items() if model.startswith(name)]
        return max(prefixed, key=lambda entry: len(entry.id)) if prefixed else self._default


def _add(total: Usage, more: Usage) -> Usage:
    return replace(
        total,
        input_tokens=total.input_tokens + more.input_tokens,
        output_tokens=total.output_tokens + more.output_tokens,
        cache_read_tokens=total.cache_read_tokens + more.cache_read_tokens,
        cache_write_tokens=total.cache_write_tokens + more.cache_write_tokens,
    )


def _tokens(usage: Usage) -> dict[str, int]:
    return {
        "input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
        "cache_read_tokens": usage.cache_read_tokens, "cache_write_tokens": usage.cache_write_tokens,
    }  # fmt: skip


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")
