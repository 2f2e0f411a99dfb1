"""Cost ledger, tenant budgets and concurrency caps, the audit log, and provider quota awareness.

- `tenants`: a monthly budget and a cap on dispatches running at once (NULL: none).
- `dispatches`: why a queued dispatch waits (`queue_reason`), until when at least (`not_before`), and
  what it may fall back to when its provider account is out of quota (`failover`).
- `ledger_entries`: what each tenant was charged, one row per priced quantity.
- `audit_log` and `audit_head`: the hash-chained audit log and its last link (one row, seq 0 at first).
- `provider_quotas`: provider accounts out of quota until a time.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

from outpost.db.types import PortableJSON, UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

ULID = 26
GENESIS_HASH = "0" * 64


def upgrade() -> None:
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.add_column(sa.Column("monthly_budget_micro_usd", sa.BigInteger, nullable=True))
        batch_op.add_column(sa.Column("max_concurrent_dispatches", sa.Integer, nullable=True))
    with op.batch_alter_table("dispatches", schema=None) as batch_op:
        batch_op.add_column(sa.Column("queue_reason", sa.Text, nullable=True))
        batch_op.add_column(sa.Column("not_before", UTCDateTime, nullable=True))
        batch_op.add_column(sa.Column("failover", PortableJSON, nullable=True))
    _create_ledger()
    _create_audit()
    op.create_table(
        "provider_quotas",
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("provider", sa.String(40), nullable=False),
        sa.Column("exhausted_until", UTCDateTime, nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("recorded_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("account", "provider", name="pk_provider_quotas"),
    )


def _create_ledger() -> None:
    zero = sa.text("0")
    counters = (
        "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
        "cpu_usec", "memory_byte_s", "storage_byte_s",
    )  # fmt: skip
    op.create_table(
        "ledger_entries",
        sa.Column("id", sa.String(ULID), nullable=False),
        sa.Column("tenant_id", sa.String(ULID), nullable=False),
        sa.Column("dispatch_id", sa.String(ULID), nullable=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("agent", sa.String(20), nullable=True),
        sa.Column("provider", sa.String(40), nullable=True),
        sa.Column("model", sa.String(200), nullable=True),
        *(sa.Column(name, sa.BigInteger, nullable=False, server_default=zero) for name in counters),
        sa.Column("cost_micro_usd", sa.BigInteger, nullable=False),
        sa.Column("prices", sa.String(40), nullable=False),
        sa.Column("period_start", UTCDateTime, nullable=True),
        sa.Column("occurred_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ledger_entries"),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name="fk_ledger_entries_tenant_id_tenants"),
    )
    op.create_index("ix_ledger_entries_tenant_id_occurred_at", "ledger_entries", ["tenant_id", "occurred_at"])
    op.create_index("ix_ledger_entries_dispatch_id", "ledger_entries", ["dispatch_id"])
    op.create_index("ix_ledger_entries_occurred_at", "ledger_entries", ["occurred_at"])


def _create_audit() -> None:
    op.create_table(
        "audit_log",
        sa.Column("seq", sa.BigInteger, nullable=False, autoincrement=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("tenant_id", sa.String(ULID), nullable=True),
        sa.Column("actor", sa.String(64), nullable=True),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("target", sa.String(255), nullable=True),
        sa.Column("detail", PortableJSON, nullable=False),
        sa.Column("source_ip", sa.String(64), nullable=True),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_tenant_id_seq", "audit_log", ["tenant_id", "seq"])
    op.create_index("ix_audit_log_created_at", "audit_log", ["created_at"])
    head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_head"),
    )
    op.bulk_insert(head, [{"id": 1, "seq": 0, "hash": GENESIS_HASH}])


def downgrade() -> None:
    op.drop_table("provider_quotas")
    op.drop_table("audit_head")
    op.drop_index("ix_audit_log_created_at", table_name="audit_log")
    op.drop_index("ix_audit_log_tenant_id_seq", table_name="audit_log")
    op.drop_table("audit_log")
    for index in ("occurred_at", "dispatch_id", "tenant_id_occurred_at"):
        op.drop_index(f"ix_ledger_entries_{index}", table_name="ledger_entries")
    op.drop_table("ledger_entries")
    with op.batch_alter_table("dispatches", schema=None) as batch_op:
        batch_op.drop_column("failover")
        batch_op.drop_column("not_before")
        batch_op.drop_column("queue_reason")
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.drop_column("max_concurrent_dispatches")
        batch_op.drop_column("monthly_budget_micro_usd")
