"""The model catalog: tiers per agent, explicit models, prices."""

from __future__ import annotations

from pathlib import Path

import pytest

from outpost.agents.catalog import cost_micro_usd, default_catalog, load_catalog, resolve_model
from outpost.agents.events import Usage
from outpost.domain.dispatch import Tier
from outpost.errors import InvalidInput

CATALOG = default_catalog()
EXPECTED_PROVIDER = {"claude": "anthropic", "codex": "openai", "gemini": "gemini", "grok": "xai"}


@pytest.mark.parametrize("agent", sorted(EXPECTED_PROVIDER))
@pytest.mark.parametrize("tier", list(Tier))
def test_every_model_agent_has_a_model_for_every_tier_at_its_vendor(agent: str, tier: Tier) -> None:
    choice = resolve_model(CATALOG, agent, tier, None)
    assert choice is not None
    assert choice.provider == EXPECTED_PROVIDER[agent]
    assert choice.model.tier == tier


def test_the_tiers_of_claude_are_its_opus_sonnet_and_haiku() -> None:
    ids = {tier: resolve_model(CATALOG, "claude", tier, None) for tier in Tier}
    assert {tier: choice.model.id for tier, choice in ids.items() if choice} == {
        Tier.FLAGSHIP: "claude-opus-5-5",
        Tier.BALANCED: "claude-sonnet-5-5",
        Tier.FAST: "claude-haiku-5-5",
    }


def test_no_tier_means_balanced() -> None:
    choice = resolve_model(CATALOG, "codex", None, None)
    assert choice is not None
    assert choice.model.id == "gpt-6.1-sol"


def test_an_explicit_model_picks_its_vendor_among_the_agents_vendors() -> None:
    choice = resolve_model(CATALOG, "aider", None, "deepseek-flash")
    assert choice is not None
    assert (choice.provider, choice.model.id) == ("deepseek", "deepseek-flash")


def test_a_model_the_agent_cannot_use_is_refused_naming_the_field() -> None:
    with pytest.raises(InvalidInput, match="not one the claude agent can use") as refused:
        resolve_model(CATALOG, "claude", None, "gpt-6.1-sol")
    assert refused.value.field == "model"


def test_the_shell_agent_takes_no_model() -> None:
    assert resolve_model(CATALOG, "shell", Tier.FAST, None) is None
    with pytest.raises(InvalidInput, match="runs no model"):
        resolve_model(CATALOG, "shell", None, "claude-opus-5-5")


def test_cost_is_tokens_times_prices_in_micro_usd() -> None:
    haiku = resolve_model(CATALOG, "claude", Tier.FAST, None)
    assert haiku is not None
    usage = Usage(input_tokens=1000, output_tokens=400, cache_read_tokens=2000, cache_write_tokens=80)
    # 1000 x 0.10 + 400 x 0.50 + 2000 x 0.01 + 80 x 0.125 = 100 + 200 + 20 + 10
    assert cost_micro_usd(usage, haiku.model) == 330


def test_every_vendor_says_when_its_prices_were_checked() -> None:
    assert CATALOG.version
    assert all(vendor.checked.year >= 2026 for vendor in CATALOG.vendors.values())


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('version = "x"\nvendors = {}\n[agents]\nclaude = ["nobody"]\n', "unknown vendors"),
        ("version = 1 = 2", "invalid"),
        (
            'version = "x"\n[vendors.v]\nprovider = "p"\nchecked = "2026-01-01"\nmodels = [{ id = "m", '
            'tier = "fast", input = -1.0, output = 1.0, cache_read = 0.0, cache_write = 0.0 }]\n[agents]\n',
            "greater than or equal to 0",
        ),
        (
            'version = "x"\n[vendors.v]\nprovider = "p"\nchecked = "2026-01-01"\nmodels = [{ id = "m", '
            'tier = "fast", input = 1.0, output = 1.0, cache_read = 0.0, cache_write = 0.0 }]\n'
            '[agents]\na = ["v"]\n',
            "lacks a model for a tier",
        ),
    ],
    ids=["unknown-vendor", "bad-toml", "negative-price", "missing-tier"],
)
def test_a_broken_catalog_is_refused_saying_why(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "catalog.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=problem):
        load_catalog(path)
