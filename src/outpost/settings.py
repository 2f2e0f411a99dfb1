"""Outpost's configuration: one nested settings object, read from `OUTPOST_*` environment variables.

Nested fields use `__` (`OUTPOST_WORKER__SLOTS=16`). The object is built once by the composition root
(`outpost.app`) and passed down; nothing reads the environment at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from outpost.domain.dispatch import AgentName
from outpost.errors import InvalidInput
from outpost.events.settings import EventSettings
from outpost.ledger.settings import LedgerSettings
from outpost.sandbox.egress_policy import parse_entry
from outpost.secrets.key_list import KeyList
from outpost.services.fleet_settings import WORKER_STALE_S, FleetSettings
from outpost.services.retention_settings import RetentionSettings
from outpost.storage.settings import StorageSettings
from outpost.workspaces.settings import GitSettings, WorkspaceSettings


class ProviderSettings(BaseModel):
    """One model provider's real upstream, used by the model gateway (never handed to a sandbox)."""

    api_key: SecretStr | None = None
    """The provider key the gateway injects into forwarded requests."""
    base_url: str | None = None
    """Upstream base URL; tests point it at a fake provider on 127.0.0.1."""


class LimitSettings(BaseModel):
    """Limits applied to every API request and dispatch."""

    requests_per_s: float = Field(default=50.0, ge=0)
    """Per-key API rate limit in requests per second (a token bucket); 0 disables it. Event streams and
    health checks are not counted."""
    requests_burst: int | None = Field(default=None, ge=1)
    """Requests a key may send at once after a pause (the bucket's size); default twice `requests_per_s`."""
    spend_refresh_ms: int = Field(default=250, ge=0)
    """How old a run's view of its tenant's month spend may be before a model call reads it again from
    the database (this process's own runs are always counted as they spend)."""
    call_output_tokens_cap: int = Field(default=128_000, ge=1)
    """Output tokens a model call that sets no output limit of its own is assumed to be able to produce,
    when its cost is bounded against a budget before it is sent."""
    call_reservation_s: int = Field(default=900, ge=1)
    """How long a model call's budget reservation lasts at most: one left by a worker that died mid-call
    no longer holds the tenant's budget after this."""
    max_body_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)
    """Largest request body accepted; larger ones get 413."""
    max_task_chars: int = Field(default=256 * 1024, ge=1)
    """Longest task text accepted."""
    default_timeout_s: int = Field(default=3600, ge=1)
    """Wall-clock limit of a dispatch that does not set `timeout_s`."""
    max_timeout_s: int = Field(default=24 * 3600, ge=1)
    """Largest `timeout_s` a dispatch may ask for."""
    max_log_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    """Output kept per dispatch, counting each kept event's text plus 64 bytes for its row; further output
    is dropped and a single notice event says so."""
    max_line_bytes: int = Field(default=16 * 1024, ge=256)
    """Longest single log line stored; longer lines are split."""


class WorkerSettings(BaseModel):
    """The worker that runs dispatches (in-process in the embedded default)."""

    queue: Literal["auto", "rows", "procrastinate"] = "auto"
    """How dispatches reach workers. `rows`: the dispatch row is the queue entry and `outpost serve` runs
    them itself. `procrastinate` (PostgreSQL only): each dispatch gets a procrastinate job in the same
    transaction, `outpost worker` processes on any number of machines run them, and `outpost serve` only
    serves the API unless `enabled` is set explicitly. `auto` (the default): `procrastinate` on a
    PostgreSQL database, `rows` on SQLite (the embedded system)."""
    enabled: bool = True
    """Run a worker inside `outpost serve` (with the `procrastinate` queue: false unless set)."""
    slots: int = Field(default=8, ge=1, le=1024)
    """Dispatches this worker runs at once."""
    max_attempts: int = Field(default=2, ge=1, le=10)
    """Runs a dispatch may get when its worker is lost; after the last it fails with `worker_lost`."""
    poll_interval_s: float = Field(default=1.0, gt=0)
    """How often the worker looks for queued dispatches written by other processes."""
    log_flush_ms: int = Field(default=0, ge=0)
    """Extra time output lines wait to be batched with later ones before they are written as events. 0
    (the default): a line is written at once when no write of its run is under way, and lines that
    arrive during a write go together in the next one."""
    abort_grace_s: float = Field(default=5.0, gt=0)
    """How long a cancel waits for the worker to stop a run before it marks the dispatch itself."""
    heartbeat_s: float = Field(default=5.0, gt=0)
    """How often a worker records that it is alive (and how busy it is) in the `workers` table."""
    stale_s: float = Field(default=WORKER_STALE_S, gt=0)
    """Silence after which a worker is taken for dead: its dispatches are queued again or fail with
    `worker_lost`. Several heartbeats long, so that a slow database write is not a death."""
    drain_timeout_s: float = Field(default=300.0, ge=0)
    """How long a fleet worker told to stop (SIGTERM) lets its runs finish before it kills the rest
    and hands their dispatches back to the queue."""
    agents: list[AgentName] | None = None
    """The agents a fleet worker offers to run (`outpost worker --agents`); default: those whose CLI is
    ready on its machine."""


class SandboxSettings(BaseModel):
    """Where dispatch commands run."""

    backend: Literal["process", "bwrap"] = "bwrap"
    """`bwrap`: bubblewrap namespaces, one unprivileged uid per run (needs root and bubblewrap).
    `process`: a plain subprocess in its own process group; NOT isolated (insecure)."""
    uid_first: int = Field(default=200_000, ge=1000)
    """First uid of the pool the bwrap backend runs dispatches as (each server on a host needs its own)."""
    uid_count: int = Field(default=4096, ge=1)
    """How many uids the pool holds: at least the worker's slots."""
    memory_mb: int = Field(default=4096, ge=16)
    """Memory limit of one dispatch (bwrap backend); past it the kernel kills it and it fails `oom`."""
    pids_max: int = Field(default=1024, ge=8)
    """Most processes and threads one dispatch may have at once (bwrap backend); `pids` when it hits it."""
    cpu_cores: float = Field(default=2.0, ge=0.01)
    """CPU time one dispatch may use, in cores (bwrap backend)."""
    disk_mb: int = Field(default=2048, ge=1)
    """Size of one dispatch's workspace (bwrap backend: a tmpfs, so its pages also count against the
    memory limit); a run that fills it and fails ends `disk_full`."""
    disk_inodes: int = Field(default=262_144, ge=64)
    """Files and directories one dispatch's workspace may hold (bwrap backend); `disk_full` past it."""
    parked_launchers: int = Field(default=2, ge=0, le=64)
    """bwrap launchers kept waiting in their own cgroups (bwrap backend): a run that takes one skips
    moving into its cgroup, about 11 ms of its start on cgroup v1. Each costs ~12 ms of CPU to start and
    ~10 MB while it waits; 0 starts every run's bwrap directly."""
    run_dir: Path = Path("/run/outpost")
    """Where the bwrap backend stages each run's mounts; every sandbox uid must be able to search it
    (the server creates it 0711), so the data dir itself may stay private."""
    egress_allow: list[str] = Field(default_factory=list)
    """Hosts every dispatch may reach through the egress proxy (bwrap backend): `host`, `*.suffix`
    (subdomains only), optionally `:port` (default 443); e.g. `["registry.npmjs.org", "*.pypi.org"]`.
    Names must resolve to public addresses; IP literals are never allowed. Empty: no way out."""

    @field_validator("egress_allow")
    @classmethod
    def egress_entries_are_valid(cls, entries: list[str]) -> list[str]:
        for entry in entries:
            try:
                parse_entry(entry)
            except InvalidInput as exc:
                raise ValueError(exc.detail) from None
        return entries


class AgentSettings(BaseModel):
    """The agent CLIs and how dispatches run them."""

    install_dir: Path = Path(".tools/agents")
    """Where `outpost agents install` puts the pinned agent CLIs (npm packages under `npm/`, PyPI ones in
    a virtual environment each); runs see it read-only at the same path."""
    max_turns: int = Field(default=50, ge=1, le=10_000)
    """Turn cap passed to CLIs that have one (Claude Code, Gemini CLI, the Grok CLI)."""


class GatewaySettings(BaseModel):
    """The model gateway: the only way a run reaches a model provider."""

    port: int = Field(default=8089, ge=1, le=65535)
    """Port of the gateway listener inside each sandbox (at 127.0.0.1)."""
    connect_timeout_s: float = Field(default=10.0, gt=0)
    """Longest wait for a connection to a provider."""
    read_timeout_s: float = Field(default=300.0, gt=0)
    """Longest silence from a provider, before its first byte or between two chunks of a stream."""
    max_request_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    """Largest request body a run may send to a provider; larger ones get 413."""


class SecretSettings(BaseModel):
    """The master key that encrypts stored secrets (tenants' provider keys, git credentials)."""

    master_key: SecretStr | None = None
    """32 random bytes in base64. Every server and worker sharing one database needs the same key; when
    unset, the key is read from `master_key_file`, which the first start creates."""
    master_key_file: Path | None = None
    """Where the master key is kept when `master_key` is unset (default: `master.key` in the data dir,
    mode 0600; a file others can read is refused)."""
    previous_master_keys: KeyList = Field(default_factory=list)
    """Older master keys (base64; a JSON list, or separated by commas) whose rows still open while
    `outpost secrets reseal` moves them under the current key; new rows are sealed under the current key
    only. Drop a key once `outpost secrets status` shows no row under it."""


class Settings(BaseSettings):
    """All of Outpost's settings."""

    model_config = SettingsConfigDict(
        env_prefix="OUTPOST_", env_nested_delimiter="__", extra="ignore", validate_default=True
    )

    data_dir: Path = Path(".outpost")
    """Where the embedded default keeps its SQLite file, artifacts, workspaces and mirrors."""
    database_url: str | None = None
    """`sqlite+aiosqlite:///…` (default: `outpost.db` under the data dir) or `postgresql+psycopg://…`."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Threshold of the structured log written to stderr."""
    key_cache_ttl_s: float = Field(default=5.0, ge=0)
    """How long a verified API key is trusted without a database read; revocation through this server
    takes effect at once, through another server within this time."""
    providers: dict[str, ProviderSettings] = Field(default_factory=dict)
    """Model providers by lower-case name (anthropic, openai, gemini, xai, deepseek), e.g. from
    `OUTPOST_PROVIDERS__ANTHROPIC__API_KEY`."""
    limits: LimitSettings = Field(default_factory=LimitSettings)
    secrets: SecretSettings = Field(default_factory=SecretSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    git: GitSettings = Field(default_factory=GitSettings)
    workspaces: WorkspaceSettings = Field(default_factory=WorkspaceSettings)
    agents: AgentSettings = Field(default_factory=AgentSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    events: EventSettings = Field(default_factory=EventSettings)
    sandbox: SandboxSettings = Field(default_factory=SandboxSettings)
    ledger: LedgerSettings = Field(default_factory=LedgerSettings)
    fleet: FleetSettings = Field(default_factory=FleetSettings)

    @model_validator(mode="after")
    def resolve_the_worker_queue(self) -> Settings:
        """`worker.queue` follows the database when `auto`; with procrastinate, `outpost serve` serves the
        API only unless `worker.enabled` was set."""
        worker = self.worker
        if worker.queue == "auto":
            on_postgres = self.resolved_database_url.startswith("postgres")
            worker.queue = "procrastinate" if on_postgres else "rows"
        if worker.queue == "procrastinate" and "enabled" not in worker.model_fields_set:
            worker.enabled = False
        return self

    @property
    def resolved_master_key_file(self) -> Path:
        return self.secrets.master_key_file or self.data_dir / "master.key"

    @property
    def resolved_database_url(self) -> str:
        """The database URL in force: the configured one, or SQLite under the data dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir.resolve() / 'outpost.db'}"
