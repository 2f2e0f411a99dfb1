"""Artifacts a run left behind, and the persistent workspaces dispatches share."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class ArtifactRead(BaseModel):
    name: str = Field(
        description="`changes.patch`, `changed-files.json`, `final-message.md`, `events.jsonl`, or"
        " `outputs/<path>` for a file the run left in `$OUTPOST_OUTPUTS_DIR`"
    )
    size_bytes: int
    sha256: str
    content_type: str
    created_at: datetime
    expires_at: datetime
    download_url: str = Field(description="Signed and expiring: needs no API key, and 403 once expired.")
    url_expires_at: datetime


class ArtifactList(BaseModel):
    items: list[ArtifactRead]


class WorkspaceRead(BaseModel):
    id: str
    name: str
    repo_url: str | None
    size_bytes: int = Field(description="Its size when its last run ended; the tenant's quota counts it.")
    in_use_by: str | None = Field(description="The dispatch using it now, if any.")
    created_at: datetime
    last_used_at: datetime


class WorkspacePage(BaseModel):
    items: list[WorkspaceRead]
    quota_bytes: int
    used_bytes: int
