"""Failover over the model catalog: checking a request's fallbacks, and listing the models a dispatch may
run on instead when its provider account is out of quota (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from outpost.agents.catalog import Catalog, ModelChoice, resolve_model
from outpost.domain.dispatch import Tier
from outpost.errors import InvalidInput
from outpost.schemas.failover import FailoverSpec, requested_failover


@dataclass(frozen=True, slots=True)
class Fallback:
    """One model a dispatch may run on instead, and the tier it then shows (None: it keeps its own)."""

    choice: ModelChoice
    tier: Tier | None


def stored_failover(
    catalog: Catalog, agent: str, tier: Tier | None, model: str | None, spec: FailoverSpec | None
) -> dict[str, Any] | None:
    """The request's `failover` as the dispatch stores it. Raises InvalidInput naming `failover`,
    `failover.accounts`, `failover.models` or `failover.tiers` when the agent runs no model, when it cannot
    use a model named, or when a fallback could only run on the dispatch's own provider (it could never
    help)."""
    if spec is None:
        return None
    own = resolve_model(catalog, agent, tier, model)
    if own is None:
        where = "failover.accounts" if spec.accounts else "failover"
        raise InvalidInput(f"{where}: the {agent} agent runs no model; leave failover out", field=where)
    for name in spec.models:
        choice = _model_choice(catalog, agent, name)
        if choice.provider == own.provider:
            raise InvalidInput(
                f"failover.models: {name} runs on {own.provider}, like the dispatch itself: a quota holds "
                "the whole provider account, so it could never help; name a model of another provider",
                field="failover.models",
            )
    for fallback_tier in spec.tiers:
        if all(f.choice.provider == own.provider for f in _tier_fallbacks(catalog, agent, fallback_tier)):
            raise InvalidInput(
                f"failover.tiers: the {agent} agent has no {fallback_tier} model outside {own.provider}, the "
                "dispatch's own provider: a quota holds the whole provider account, so it could never help",
                field="failover.tiers",
            )
    return spec.model_dump(mode="json", exclude_defaults=True)


def fallbacks(catalog: Catalog, agent: str, stored: dict[str, Any] | None) -> list[Fallback]:
    """The other models a dispatch may fail over to, in the order to try them (`accounts`, which keeps
    the model, is the claim's to apply). What no longer resolves (the catalog changed since it was
    submitted) is left out."""
    spec = requested_failover(stored)
    if spec is None:
        return []
    found: list[Fallback] = []
    for name in spec.models:
        try:
            found.append(Fallback(_model_choice(catalog, agent, name), None))
        except InvalidInput:
            continue
    for tier in spec.tiers:
        found.extend(_tier_fallbacks(catalog, agent, tier))
    return found


def _model_choice(catalog: Catalog, agent: str, name: str) -> ModelChoice:
    try:
        choice = resolve_model(catalog, agent, None, name)
    except InvalidInput as exc:
        raise InvalidInput(f"failover.models: {exc.detail}", field="failover.models") from exc
    if choice is None:  # resolve_model refuses a model for an agent that runs none
        raise InvalidInput(f"failover: the {agent} agent runs no model; leave it out", field="failover")
    return choice


def _tier_fallbacks(catalog: Catalog, agent: str, tier: Tier) -> list[Fallback]:
    vendors = (catalog.vendors[name] for name in catalog.agents.get(agent, []))
    return [
        Fallback(ModelChoice(vendor.provider, entry), tier)
        for vendor in vendors
        if (entry := vendor.by_tier(tier)) is not None
    ]
