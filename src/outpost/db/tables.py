"""Table definitions (SQLAlchemy Core). The Alembic chain must produce exactly this schema."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from outpost.db.types import PortableJSON, UTCDateTime

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

ULID_LEN = 26

tenants = Table(
    "tenants",
    metadata,
    Column("id", String(ULID_LEN), primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
    # The tenant's caps (memory_mb, pids, cpu_cores, disk_mb, timeout_s) and its egress hosts; NULL: none.
    Column("limits", PortableJSON, nullable=True),
    Column("egress_allow", PortableJSON, nullable=True),
    # Spending cap per calendar month (UTC), and dispatches running at once; NULL: none.
    Column("monthly_budget_micro_usd", BigInteger, nullable=True),
    Column("max_concurrent_dispatches", Integer, nullable=True),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(ULID_LEN), primary_key=True),
    Column("tenant_id", String(ULID_LEN), ForeignKey("tenants.id"), nullable=False, index=True),
    Column("prefix", String(32), nullable=False, unique=True),
    Column("secret_sha256", String(64), nullable=False),
    Column("name", String(200), nullable=False),
    Column("is_admin", Boolean, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=True),
    Column("revoked_at", UTCDateTime, nullable=True),
)

dispatches = Table(
    "dispatches",
    metadata,
    Column("id", String(ULID_LEN), primary_key=True),
    Column("tenant_id", String(ULID_LEN), ForeignKey("tenants.id"), nullable=False),
    Column("status", String(20), nullable=False),
    Column("version", Integer, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("event_seq", BigInteger, nullable=False),
    Column("agent", String(20), nullable=False),
    Column("task", Text, nullable=False),
    Column("tier", String(20), nullable=False),
    Column("model", String(200), nullable=True),
    Column("timeout_s", Integer, nullable=False),
    Column("env", PortableJSON, nullable=False),
    Column("labels", PortableJSON, nullable=False),
    Column("max_cost_micro_usd", BigInteger, nullable=True),
    Column("limits", PortableJSON, nullable=True),
    Column("egress_allow", PortableJSON, nullable=True),
    Column("idempotency_key", String(255), nullable=True),
    Column("request_sha256", String(64), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime, nullable=True),
    Column("finished_at", UTCDateTime, nullable=True),
    Column("exit_code", Integer, nullable=True),
    Column("result", Text, nullable=True),
    Column("failure_reason", String(40), nullable=True),
    Column("failure_detail", Text, nullable=True),
    Column("input_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),
    Column("cache_read_tokens", BigInteger, nullable=False),
    Column("cache_write_tokens", BigInteger, nullable=False),
    Column("cost_micro_usd", BigInteger, nullable=False),
    # What the agent CLI itself reported (Claude Code, aider): a cross-check of the metered cost.
    Column("cli_cost_micro_usd", BigInteger, nullable=True),
    # The repository ({url, ref}) the workspace starts from, the commit it resolved to, the persistent
    # workspace the dispatch uses (NULL: an ephemeral one), and the branch its changes are pushed to.
    Column("repo", PortableJSON, nullable=True),
    Column("base_commit", String(64), nullable=True),
    Column("workspace_id", String(ULID_LEN), nullable=True),
    Column("workspace_name", String(200), nullable=True),
    Column("push_branch", String(255), nullable=True),
    # Why a queued dispatch is not claimed yet (its tenant at its concurrency cap, its provider account out
    # of quota), and the earliest time it may be claimed; NULL: nothing holds it back.
    Column("queue_reason", Text, nullable=True),
    Column("not_before", UTCDateTime, nullable=True),
    # What the dispatch may fall back to when its provider account is out of quota (tiers, accounts), and
    # under `account` the one a claim moved it onto (`server`: the worker sends the server's key).
    Column("failover", PortableJSON, nullable=True),
    # The worker holding the current attempt (see `workers`); NULL when none does.
    Column("worker_id", String(64), nullable=True),
    UniqueConstraint("tenant_id", "idempotency_key"),
    # Keyset pagination: newest first within a tenant, optionally filtered by status or agent.
    Index(None, "tenant_id", "id"),
    Index(None, "tenant_id", "status", "id"),
    Index(None, "tenant_id", "agent", "id"),
    # The worker's claim query and the restart reconciler.
    Index(None, "status", "id"),
    # The fleet's last-hour figures.
    Index(None, "finished_at"),
)

# The worker fleet: one row per worker process, kept up to date by its heartbeat.
workers = Table(
    "workers",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("version", String(40), nullable=False),
    Column("slots", Integer, nullable=False),
    Column("busy", Integer, nullable=False),
    Column("agents", PortableJSON, nullable=False),
    Column("draining", Boolean, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("heartbeat_at", UTCDateTime, nullable=False),
    Column("stopped_at", UTCDateTime, nullable=True),
    Index(None, "heartbeat_at"),
)

dispatch_events = Table(
    "dispatch_events",
    metadata,
    Column("dispatch_id", String(ULID_LEN), ForeignKey("dispatches.id"), primary_key=True),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("kind", String(20), nullable=False),
    Column("data", PortableJSON, nullable=False),
    # The writing transaction's place in the tenant-wide event feed (see db/repositories/event_feed.py):
    # PostgreSQL's transaction id, or on SQLite a value of `event_feed_clock`; 0 for older rows.
    Column("feed_txn", BigInteger, nullable=False, server_default=text("0")),
    Index(None, "feed_txn", "dispatch_id", "seq"),
)

# SQLite only: one row counting the transactions that wrote events (the event feed's clock). PostgreSQL
# uses its own transaction ids instead, which need no row that every writer would have to lock.
event_feed_clock = Table(
    "event_feed_clock",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("last_txn", BigInteger, nullable=False),
)

# Encrypted secrets (provider keys, git credentials), by tenant and name. Each change adds a version; an
# older version stays readable until it is retired, so a key can be rotated without a gap.
secrets = Table(
    "secrets",
    metadata,
    Column("id", String(ULID_LEN), primary_key=True),
    Column("tenant_id", String(ULID_LEN), ForeignKey("tenants.id"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("version", Integer, nullable=False),
    Column("key_id", String(16), nullable=False),
    Column("sealed", LargeBinary, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("retired_at", UTCDateTime, nullable=True),
    UniqueConstraint("tenant_id", "name", "version"),
)

# A tenant's own settings for a model provider; its key, if any, is the secret `provider/<name>/api_key`.
tenant_providers = Table(
    "tenant_providers",
    metadata,
    Column("tenant_id", String(ULID_LEN), ForeignKey("tenants.id"), primary_key=True),
    Column("provider", String(40), primary_key=True),
    Column("base_url", String(2048), nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
)

# What a dispatch's run left behind (patch, changed files, final message, event log), stored in the object
# store under `object_key`; rows and objects expire together at `expires_at`.
artifacts = Table(
    "artifacts",
    metadata,
    Column("id", String(ULID_LEN), primary_key=True),
    Column("tenant_id", String(ULID_LEN), ForeignKey("tenants.id"), nullable=False),
    Column("dispatch_id", String(ULID_LEN), ForeignKey("dispatches.id"), nullable=False),
    Column("name", String(255), nullable=False),
    Column("object_key", String(1024), nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("content_type", String(255), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    UniqueConstraint("dispatch_id", "name"),
    Index(None, "expires_at"),
)

# Named workspaces that outlive a dispatch, per tenant. `busy_dispatch_id` is the dispatch using it (at
# most one at a time); `size_bytes` is its size when its last run ended (the tenant's quota counts it).
workspaces = Table(
    "workspaces",
    metadata,
    Column("id", String(ULID_LEN), primary_key=True),
    Column("tenant_id", String(ULID_LEN), ForeignKey("tenants.id"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("repo_url", String(2048), nullable=True),
    Column("size_bytes", BigInteger, nullable=False),
    Column("busy_dispatch_id", String(ULID_LEN), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_used_at", UTCDateTime, nullable=False),
    UniqueConstraint("tenant_id", "name"),
)

# What each tenant was charged, one row per priced quantity: a dispatch's tokens per model, its compute
# (vCPU-seconds, GB-seconds), and storage held over a period. Rows are only ever added.
ledger_entries = Table(
    "ledger_entries",
    metadata,
    Column("id", String(ULID_LEN), primary_key=True),
    Column("tenant_id", String(ULID_LEN), ForeignKey("tenants.id"), nullable=False),
    Column("dispatch_id", String(ULID_LEN), nullable=True),
    Column("kind", String(20), nullable=False),  # tokens | compute | storage
    Column("agent", String(20), nullable=True),
    Column("provider", String(40), nullable=True),
    Column("model", String(200), nullable=True),
    Column("input_tokens", BigInteger, nullable=False, server_default=text("0")),
    Column("output_tokens", BigInteger, nullable=False, server_default=text("0")),
    Column("cache_read_tokens", BigInteger, nullable=False, server_default=text("0")),
    Column("cache_write_tokens", BigInteger, nullable=False, server_default=text("0")),
    Column("cpu_usec", BigInteger, nullable=False, server_default=text("0")),
    Column("memory_byte_s", BigInteger, nullable=False, server_default=text("0")),
    Column("storage_byte_s", BigInteger, nullable=False, server_default=text("0")),
    Column("cost_micro_usd", BigInteger, nullable=False),
    Column("prices", String(40), nullable=False),  # the version of the price table applied
    Column("period_start", UTCDateTime, nullable=True),  # storage: the start of the period charged
    Column("occurred_at", UTCDateTime, nullable=False),
    Index(None, "tenant_id", "occurred_at"),
    Index(None, "dispatch_id"),
    Index(None, "occurred_at"),
)

# The audit log: append-only, each row holding the MAC of the previous row's MAC and its own content, in
# `seq` order. `audit_head` (one row) is the chain's last link; appends lock it, so `seq` has no gaps.
audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("tenant_id", String(ULID_LEN), nullable=True),
    Column("actor", String(64), nullable=True),
    Column("action", String(40), nullable=False),
    Column("target", String(255), nullable=True),
    Column("detail", PortableJSON, nullable=False),
    Column("source_ip", String(64), nullable=True),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index(None, "tenant_id", "seq"),
    Index(None, "created_at"),
)

audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
    Column("mac", String(64), nullable=True),
)

# A model call a gateway let through for a tenant with a budget and has not metered yet, with what it may
# cost at most (decision 0014). Deleted when the call's cost is written, or when its dispatch settles.
call_reservations = Table(
    "call_reservations",
    metadata,
    Column("id", String(ULID_LEN), primary_key=True),
    Column("tenant_id", String(ULID_LEN), nullable=False),
    Column("dispatch_id", String(ULID_LEN), nullable=False),
    Column("micro_usd", BigInteger, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Index(None, "tenant_id"),
    Index(None, "dispatch_id"),
)

# A provider account that said its quota or rate limit is exhausted until a time. `account` is the
# tenant whose own key it is, or `server` for the server's key.
provider_quotas = Table(
    "provider_quotas",
    metadata,
    Column("account", String(64), primary_key=True),
    Column("provider", String(40), primary_key=True),
    Column("exhausted_until", UTCDateTime, nullable=False),
    Column("detail", Text, nullable=False),
    Column("recorded_at", UTCDateTime, nullable=False),
)
