"""Failover over the model catalog: what a request may name, and the order fallbacks are tried in."""

from __future__ import annotations

import pytest

from outpost.agents.catalog import default_catalog
from outpost.domain.dispatch import Tier
from outpost.errors import InvalidInput
from outpost.schemas.failover import FailoverSpec
from outpost.services.failover import fallbacks, stored_failover


def spec(**fields: object) -> FailoverSpec:
    return FailoverSpec.model_validate(fields)


def test_models_come_first_in_their_order_then_each_tier_across_the_agents_providers() -> None:
    stored = stored_failover(
        default_catalog(), "aider", None, "claude-sonnet-5-5", spec(models=["grok-4.3"], tiers=["fast"])
    )
    assert stored == {"models": ["grok-4.3"], "tiers": ["fast"]}
    found = [
        (f.choice.provider, f.choice.model.id, f.tier) for f in fallbacks(default_catalog(), "aider", stored)
    ]
    assert found[0] == ("xai", "grok-4.3", None)
    assert found[1:] == [
        ("anthropic", "claude-haiku-5-5", Tier.FAST),
        ("openai", "gpt-6-luna", Tier.FAST),
        ("gemini", "gemini-3.1-flash-lite", Tier.FAST),
        ("xai", "grok-4-1-fast-reasoning", Tier.FAST),
        ("deepseek", "deepseek-flash", Tier.FAST),
    ]


@pytest.mark.parametrize(
    ("agent", "model", "failover", "field"),
    [
        ("shell", None, spec(tiers=["fast"]), "failover"),
        ("claude", None, spec(tiers=["fast"]), "failover.tiers"),
        ("codex", None, spec(tiers=["flagship", "fast"]), "failover.tiers"),
        ("aider", "gpt-6.1-sol", spec(models=["gpt-6-luna"]), "failover.models"),
        ("aider", None, spec(models=["claude-haiku-5-5"]), "failover.models"),
        ("claude", None, spec(models=["gpt-6-luna"]), "failover.models"),
    ],
)
def test_a_fallback_that_could_never_help_is_refused_naming_its_field(
    agent: str, model: str | None, failover: FailoverSpec, field: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        stored_failover(default_catalog(), agent, None, model, failover)
    assert refused.value.field == field
    assert refused.value.detail.startswith(f"{field}: ")


def test_no_failover_is_stored_as_none_and_yields_no_fallback() -> None:
    assert stored_failover(default_catalog(), "claude", None, None, None) is None
    assert fallbacks(default_catalog(), "claude", None) == []


def test_a_stored_model_the_catalog_no_longer_has_is_skipped() -> None:
    found = fallbacks(default_catalog(), "aider", {"models": ["retired-model", "gpt-6-luna"]})
    assert [f.choice.model.id for f in found] == ["gpt-6-luna"]
