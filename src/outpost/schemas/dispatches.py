"""Dispatch requests and responses."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from outpost.domain.dispatch import AgentName, DispatchStatus, FailureReason, Tier
from outpost.errors import InvalidInput
from outpost.sandbox.egress_policy import parse_entry
from outpost.schemas.artifacts import ArtifactRead
from outpost.schemas.failover import FailoverSpec
from outpost.schemas.text import StorableText

EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]
LabelKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$")]
ShortText = Annotated[StorableText, Field(max_length=4096)]
MAX_ENV_VARS = 64
MAX_LABELS = 32
MAX_EGRESS_ENTRIES = 32


def _check_egress_entry(entry: str) -> str:
    try:
        parse_entry(entry)
    except InvalidInput as exc:
        raise ValueError(exc.detail) from None
    return entry


EgressEntry = Annotated[
    StorableText, Field(min_length=1, max_length=300), AfterValidator(_check_egress_entry)
]
"""A host this dispatch may reach besides the server's list: `host`, `*.suffix`, optional `:port`."""


class RepoSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: Annotated[StorableText, Field(min_length=1, max_length=2048)]
    ref: Annotated[StorableText, Field(min_length=1, max_length=255)] | None = None


WorkspaceName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")]


class WorkspaceSpec(BaseModel):
    """`ephemeral` (default): deleted once its artifacts are captured. `persistent`: kept under `name`
    for the tenant's later dispatches (created by the first one)."""

    model_config = ConfigDict(extra="forbid")
    mode: Literal["ephemeral", "persistent"] = "ephemeral"
    name: WorkspaceName | None = None

    @model_validator(mode="after")
    def persistent_has_a_name(self) -> WorkspaceSpec:
        if self.mode == "persistent" and self.name is None:
            raise ValueError("a persistent workspace needs a name")
        if self.mode == "ephemeral" and self.name is not None:
            raise ValueError("only a persistent workspace has a name")
        return self


class PushSpec(BaseModel):
    """Commit the run's changes on the host and push them to `branch` of the dispatch's repository."""

    model_config = ConfigDict(extra="forbid")
    branch: Annotated[StorableText, Field(min_length=1, max_length=255)]


class DispatchLimits(BaseModel):
    """Resource limits for one dispatch; each at most the server's own (bwrap backend). Omitted: the
    server's."""

    model_config = ConfigDict(extra="forbid")
    memory_mb: Annotated[int, Field(ge=16, le=1_048_576)] | None = None
    pids: Annotated[int, Field(ge=8, le=65_536)] | None = None
    cpu_cores: Annotated[float, Field(ge=0.01, le=256)] | None = None
    disk_mb: Annotated[int, Field(ge=1, le=1_048_576)] | None = None


class DispatchCreate(BaseModel):
    """`POST /v1/dispatches`. Task length and `timeout_s` are further bounded by server limits."""

    model_config = ConfigDict(extra="forbid")
    agent: AgentName
    task: Annotated[StorableText, Field(min_length=1)]
    tier: Tier | None = None
    model: Annotated[StorableText, Field(min_length=1, max_length=200)] | None = None
    repo: RepoSpec | None = None
    workspace: WorkspaceSpec = Field(default_factory=WorkspaceSpec)
    push: PushSpec | None = None
    timeout_s: Annotated[int, Field(ge=1)] | None = None
    env: dict[EnvName, ShortText] = Field(default_factory=dict)
    max_cost_usd: Annotated[float, Field(ge=0, le=1_000_000)] | None = None
    labels: dict[LabelKey, Annotated[StorableText, Field(max_length=255)]] = Field(default_factory=dict)
    limits: DispatchLimits | None = None
    egress_allow: Annotated[list[EgressEntry], Field(max_length=MAX_EGRESS_ENTRIES)] = Field(
        default_factory=list
    )
    failover: FailoverSpec | None = None

    @field_validator("task")
    @classmethod
    def task_is_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    @field_validator("env")
    @classmethod
    def env_is_bounded(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > MAX_ENV_VARS:
            raise ValueError(f"at most {MAX_ENV_VARS} variables")
        reserved = sorted(name for name in value if name.upper().startswith("OUTPOST_"))
        if reserved:
            raise ValueError(f"names starting with OUTPOST_ are reserved: {', '.join(reserved)}")
        return value

    @field_validator("labels")
    @classmethod
    def labels_are_bounded(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > MAX_LABELS:
            raise ValueError(f"at most {MAX_LABELS} labels")
        return value

    @field_validator("push")
    @classmethod
    def push_needs_repo(cls, value: PushSpec | None, info: ValidationInfo) -> PushSpec | None:
        if value is not None and info.data.get("repo") is None:
            raise ValueError("push needs a repo to push to")
        return value

    @field_validator("model")
    @classmethod
    def model_excludes_tier(cls, value: str | None, info: ValidationInfo) -> str | None:
        # A field validator (not a model one) so that the error names `model`; `tier` is validated first.
        if value is not None and info.data.get("tier") is not None:
            raise ValueError("give either tier or model, not both")
        return value


class Usage(BaseModel):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0


class Failure(BaseModel):
    reason: FailureReason
    detail: str | None


class DispatchRead(BaseModel):
    id: str
    status: DispatchStatus
    agent: AgentName
    task: str
    model: str | None
    tier: Tier
    attempt: int
    timeout_s: int
    labels: dict[str, str]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    exit_code: int | None
    result: str | None
    failure: Failure | None
    usage: Usage
    cost_usd: float
    cli_cost_usd: float | None
    """The cost the agent CLI reported itself, where it reports one (a cross-check of `cost_usd`)."""
    max_cost_usd: float | None
    limits: DispatchLimits | None
    egress_allow: list[str]
    repo: RepoSpec | None = None
    base_commit: str | None = Field(default=None, description="The commit the workspace started from.")
    workspace: WorkspaceSpec = Field(default_factory=WorkspaceSpec)
    push: PushSpec | None = None
    failover: FailoverSpec | None = None
    failover_account: Literal["server"] | None = Field(
        default=None,
        description="`server` when a claim moved the dispatch onto the server's key for its provider, its "
        "tenant's own key being out of quota (`failover.accounts`); null: it runs on the key in force for "
        "its tenant.",
    )
    queue_reason: str | None = Field(
        default=None,
        description="While queued: why a worker does not take it yet (its tenant's concurrency cap, its "
        "provider account out of quota); null when only a free worker slot is awaited.",
    )
    not_before: datetime | None = Field(
        default=None, description="While queued for a provider's quota: the earliest time it is taken."
    )
    artifacts: list[ArtifactRead] = Field(
        default_factory=list, description="Filled on `GET /v1/dispatches/{id}`; empty in list pages."
    )


class DispatchPage(BaseModel):
    items: list[DispatchRead]
    next_cursor: str | None


class EventRead(BaseModel):
    seq: int
    created_at: datetime
    kind: str
    data: dict[str, object]


class EventPage(BaseModel):
    items: list[EventRead]
    next_after: int | None
