"""Failover over the model catalog: what a request may name, and the order fallbacks are tried in."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from outpost.agents.catalog import default_catalog
from outpost.domain.dispatch import Tier
from outpost.errors import InvalidInput
from outpost.schemas.failover import (
    FailoverSpec,
    account_taken,
    requested_failover,
    with_account_taken,
)
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
        ("shell", None, spec(accounts=True), "failover.accounts"),
        ("shell", None, spec(accounts=True, tiers=["fast"]), "failover.accounts"),
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


def test_accounts_alone_is_a_failover_stored_without_the_defaults_and_adds_no_fallback_model() -> None:
    stored = stored_failover(default_catalog(), "claude", None, None, spec(accounts=True))
    assert stored == {"accounts": True}
    assert fallbacks(default_catalog(), "claude", stored) == []
    both = stored_failover(default_catalog(), "aider", None, "claude-sonnet-5-5", spec(models=["gpt-6-luna"]))
    assert both == {"models": ["gpt-6-luna"]}


@pytest.mark.parametrize("fields", [{}, {"accounts": False}, {"models": [], "tiers": [], "accounts": False}])
def test_a_failover_naming_no_fallback_is_refused(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError, match="name at least one fallback"):
        FailoverSpec.model_validate(fields)


@pytest.mark.parametrize("accounts", [["server"], "server", None, {"server": True}])
def test_accounts_must_be_a_boolean(accounts: object) -> None:
    with pytest.raises(ValidationError) as refused:
        FailoverSpec.model_validate({"accounts": accounts})
    assert refused.value.errors()[0]["loc"] == ("accounts",)


def test_the_account_a_claim_moved_a_dispatch_onto_is_kept_apart_from_the_request() -> None:
    stored = {"models": ["gpt-6-luna"], "accounts": True}
    moved = with_account_taken(stored, "server")
    assert moved == {**stored, "account": "server"}
    assert account_taken(moved) == "server"
    assert requested_failover(moved) == spec(models=["gpt-6-luna"], accounts=True)
    assert [f.choice.model.id for f in fallbacks(default_catalog(), "aider", moved)] == ["gpt-6-luna"]
    assert with_account_taken(moved, None) == stored
    assert account_taken(stored) is None
    assert with_account_taken(None, "server") is None


def test_a_request_cannot_name_the_account_itself() -> None:
    with pytest.raises(ValidationError) as refused:
        FailoverSpec.model_validate({"accounts": True, "account": "server"})
    assert refused.value.errors()[0]["loc"] == ("account",)
