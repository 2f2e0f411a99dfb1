"""Tenants and API keys."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from outpost.schemas.text import StorableText

TenantName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")]


class TenantCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: TenantName
    admin: bool = False


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[StorableText, Field(min_length=1, max_length=200)] = "default"
    admin: bool = False
    expires_in_s: Annotated[int, Field(ge=60, le=10 * 365 * 86400)] | None = None
    tenant_id: str | None = Field(
        default=None, description="Admin keys only: create the key for this tenant."
    )


class KeyRead(BaseModel):
    id: str
    tenant_id: str
    prefix: str
    name: str
    admin: bool
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class KeyIssued(KeyRead):
    key: str = Field(description="The secret key. It is shown this once and never stored.")


class TenantRead(BaseModel):
    id: str
    name: str
    created_at: datetime


class TenantIssued(TenantRead):
    key: KeyIssued
