"""The worker fleet: each `outpost worker` (and the embedded one) registers itself and beats.

- `workers`: one row per worker process, with what it can run (slots, agents), how busy it is, and its
  last heartbeat; `draining` once it stops taking work; `stopped_at` once it has exited cleanly.
- `dispatches.worker_id`: the worker holding the dispatch's current attempt (NULL when none).
- An index on `dispatches.finished_at`, for the fleet's last-hour figures.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

from outpost.db.types import PortableJSON, UTCDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("version", sa.String(40), nullable=False),
        sa.Column("slots", sa.Integer, nullable=False),
        sa.Column("busy", sa.Integer, nullable=False),
        sa.Column("agents", PortableJSON, nullable=False),
        sa.Column("draining", sa.Boolean, nullable=False),
        sa.Column("started_at", UTCDateTime, nullable=False),
        sa.Column("heartbeat_at", UTCDateTime, nullable=False),
        sa.Column("stopped_at", UTCDateTime, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_workers"),
    )
    op.create_index("ix_workers_heartbeat_at", "workers", ["heartbeat_at"])
    with op.batch_alter_table("dispatches", schema=None) as batch_op:
        batch_op.add_column(sa.Column("worker_id", sa.String(64), nullable=True))
    op.create_index("ix_dispatches_finished_at", "dispatches", ["finished_at"])


def downgrade() -> None:
    op.drop_index("ix_dispatches_finished_at", table_name="dispatches")
    with op.batch_alter_table("dispatches", schema=None) as batch_op:
        batch_op.drop_column("worker_id")
    op.drop_index("ix_workers_heartbeat_at", table_name="workers")
    op.drop_table("workers")
