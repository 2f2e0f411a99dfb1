"""The `failover` of a dispatch request: where it may run instead while its provider account is out of
quota."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from outpost.domain.dispatch import Tier
from outpost.schemas.text import StorableText

MAX_FALLBACK_MODELS = 4
ModelName = Annotated[StorableText, Field(min_length=1, max_length=200)]


class FailoverSpec(BaseModel):
    """Fallbacks, tried when the dispatch's own provider account is out of quota as a worker claims it:
    `models` in the order given, then `tiers` in the order given (a tier stands for that tier's model of
    each provider the agent can drive, in the catalog's order). The first whose provider account is not
    out of quota is taken, and the dispatch runs on that model; with none free, it waits queued.

    A quota holds a whole provider account, so each fallback must be able to run on a provider other
    than the dispatch's own: one that cannot (any tier of an agent that drives one provider only, a model
    of the same provider) is refused with 422, as is a model the agent cannot use.
    """

    model_config = ConfigDict(extra="forbid")
    models: Annotated[list[ModelName], Field(max_length=MAX_FALLBACK_MODELS)] = Field(default_factory=list)
    tiers: Annotated[list[Tier], Field(max_length=len(Tier))] = Field(default_factory=list)

    @field_validator("models", "tiers")
    @classmethod
    def entries_are_unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("each entry may appear once")
        return value

    @model_validator(mode="after")
    def names_a_fallback(self) -> FailoverSpec:
        if not self.models and not self.tiers:
            raise ValueError("name at least one fallback in models or tiers, or leave failover out")
        return self
