"""The live versions of a tenant's secret (a provider key, a git credential), never their values."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from pydantic import BaseModel, Field

RETIRE_PREVIOUS_DESCRIPTION = (
    "Retire the versions set before this one (the default). False keeps them: they stay stored until "
    "retired one by one, so the new value can be tried and taken back by retiring it."
)
MAX_VERSION = 2**31 - 1


class SecretVersionRead(BaseModel):
    version: int
    created_at: datetime
    in_force: bool = Field(description="True for the newest live version: the one runs get.")


class SecretVersionList(BaseModel):
    items: list[SecretVersionRead] = Field(description="Live versions, newest first.")


class _Versioned(Protocol):
    @property
    def version(self) -> int: ...

    @property
    def created_at(self) -> datetime: ...


def version_list(live: Sequence[_Versioned]) -> SecretVersionList:
    """`live` (newest first) as the API shows it."""
    return SecretVersionList(
        items=[
            SecretVersionRead(version=each.version, created_at=each.created_at, in_force=index == 0)
            for index, each in enumerate(live)
        ]
    )
