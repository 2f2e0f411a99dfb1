"""The `failover` of a dispatch request: where it may run instead while its provider account is out of
quota, and how the dispatch stores it."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from outpost.domain.dispatch import Tier
from outpost.schemas.text import StorableText

MAX_FALLBACK_MODELS = 4
ModelName = Annotated[StorableText, Field(min_length=1, max_length=200)]
ACCOUNT_TAKEN = "account"
"""The key a claim adds to a dispatch's stored `failover` while it runs on another account of its own
provider (`server`): never part of a request, so a request's key cannot collide with it."""


class FailoverSpec(BaseModel):
    """Fallbacks, tried when the dispatch's own provider account is out of quota as a worker claims it:
    first, with `accounts`, the same model on the server's key (when the tenant's own key was in force),
    then `models` in the order given, then `tiers` in the order given (a tier stands for that tier's model
    of each provider the agent can drive, in the catalog's order). The first whose provider account is not
    out of quota is taken; with none free, the dispatch waits queued.

    A quota holds a whole provider account, so each fallback model must be able to run on a provider
    other than the dispatch's own: one that cannot (any tier of an agent that drives one provider only, a
    model of the same provider) is refused with 422, as is a model the agent cannot use, and `accounts`
    for an agent that runs no model.
    """

    model_config = ConfigDict(extra="forbid")
    models: Annotated[list[ModelName], Field(max_length=MAX_FALLBACK_MODELS)] = Field(default_factory=list)
    tiers: Annotated[list[Tier], Field(max_length=len(Tier))] = Field(default_factory=list)
    accounts: bool = Field(
        default=False,
        description="While the tenant's own key for the dispatch's provider is out of quota, run the same "
        "model on the server's key for that provider, if the server has one that is not (never when an "
        "admin gave the tenant a base URL of its own for that provider).",
    )

    @field_validator("models", "tiers")
    @classmethod
    def entries_are_unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("each entry may appear once")
        return value

    @model_validator(mode="after")
    def names_a_fallback(self) -> FailoverSpec:
        if not self.models and not self.tiers and not self.accounts:
            raise ValueError(
                "name at least one fallback in models or tiers, or set accounts, or leave failover out"
            )
        return self


def requested_failover(stored: dict[str, Any] | None) -> FailoverSpec | None:
    """The `failover` a dispatch was submitted with, from its stored form."""
    if not stored:
        return None
    return FailoverSpec.model_validate({k: v for k, v in stored.items() if k != ACCOUNT_TAKEN})


def account_taken(stored: dict[str, Any] | None) -> str | None:
    """The account a claim moved the dispatch onto (`server`); None: it runs on its tenant's own."""
    taken = (stored or {}).get(ACCOUNT_TAKEN)
    return taken if isinstance(taken, str) else None


def with_account_taken(stored: dict[str, Any] | None, account: str | None) -> dict[str, Any] | None:
    """`stored` saying that the dispatch runs on `account` (None: on its tenant's own account)."""
    if stored is None:
        return None
    kept = {k: v for k, v in stored.items() if k != ACCOUNT_TAKEN}
    return kept if account is None else {**kept, ACCOUNT_TAKEN: account}
