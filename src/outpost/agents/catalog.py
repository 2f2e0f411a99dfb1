"""The model catalog: which models each agent can use, what each tier means, and what tokens cost.

The data lives in `catalog.toml` next to this module (versioned, with the date each vendor's prices were
checked); this module loads and validates it once, resolves a dispatch's tier or model to one model, and
prices metered tokens in micro-USD (integers, so sums never drift).
"""

from __future__ import annotations

import functools
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from outpost.agents.events import Usage
from outpost.domain.dispatch import Tier
from outpost.errors import InvalidInput

CATALOG_PATH = Path(__file__).with_name("catalog.toml")
Price = Annotated[float, Field(ge=0, le=10_000)]


class ModelEntry(BaseModel):
    """One model and its list prices in USD per million tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: Annotated[str, Field(min_length=1, max_length=200)]
    tier: Tier | None = None
    input: Price
    output: Price
    cache_read: Price
    cache_write: Price


class Vendor(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    provider: str
    checked: date
    models: list[ModelEntry]

    def by_tier(self, tier: Tier) -> ModelEntry | None:
        return next((model for model in self.models if model.tier == tier), None)


class Catalog(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    version: str
    vendors: dict[str, Vendor]
    agents: dict[str, list[str]]

    @model_validator(mode="after")
    def agents_can_resolve_every_tier(self) -> Catalog:
        for agent, vendors in self.agents.items():
            unknown = [name for name in vendors if name not in self.vendors]
            if unknown:
                raise ValueError(f"agent {agent} names unknown vendors {unknown}")
            if vendors and any(self.vendors[vendors[0]].by_tier(tier) is None for tier in Tier):
                raise ValueError(f"vendor {vendors[0]} (first for agent {agent}) lacks a model for a tier")
        return self


@dataclass(frozen=True, slots=True)
class ModelChoice:
    """The model a dispatch runs with, the provider the gateway sends it to, and its prices."""

    provider: str
    model: ModelEntry


def load_catalog(path: Path = CATALOG_PATH) -> Catalog:
    """Raises ValueError naming what is wrong with the file."""
    try:
        return Catalog.model_validate(tomllib.loads(path.read_text()))
    except (tomllib.TOMLDecodeError, ValidationError) as exc:
        raise ValueError(f"the model catalog {path.name} is invalid: {exc}") from exc


@functools.cache
def default_catalog() -> Catalog:
    return load_catalog()


def resolve_model(catalog: Catalog, agent: str, tier: Tier | None, model: str | None) -> ModelChoice | None:
    """The model for `agent`: the one named, else its first vendor's model for the tier (balanced by
    default). None for agents without a model (shell). Raises InvalidInput (field `model`) for a model the
    agent cannot use, or any model for an agent that takes none."""
    vendors = catalog.agents.get(agent, [])
    if not vendors:
        if model is not None:
            raise InvalidInput(f"the {agent} agent runs no model; leave model out", field="model")
        return None
    if model is None:
        vendor = catalog.vendors[vendors[0]]
        entry = vendor.by_tier(tier or Tier.BALANCED)
        if entry is None:  # the loader refuses such a catalog
            raise ValueError(f"vendor {vendors[0]} has no {tier} model")
        return ModelChoice(vendor.provider, entry)
    for name in vendors:
        entry = next((m for m in catalog.vendors[name].models if m.id == model), None)
        if entry is not None:
            return ModelChoice(catalog.vendors[name].provider, entry)
    known = ", ".join(m.id for name in vendors for m in catalog.vendors[name].models)
    raise InvalidInput(
        f"model {model!r} is not one the {agent} agent can use (known: {known})", field="model"
    )


def cost_micro_usd(usage: Usage, prices: ModelEntry) -> int:
    """What `usage` costs at `prices`, in millionths of a dollar (a price per million tokens times a
    token count is micro-USD)."""
    parts: Mapping[str, tuple[int, float]] = {
        "input": (usage.input_tokens, prices.input),
        "output": (usage.output_tokens, prices.output),
        "cache_read": (usage.cache_read_tokens, prices.cache_read),
        "cache_write": (usage.cache_write_tokens, prices.cache_write),
    }
    return round(sum(tokens * price for tokens, price in parts.values()))
