"""Event feed positions: a tenant-wide, resumable order of dispatch events for live streams.

Each event row records the transaction that wrote it (`feed_txn`): PostgreSQL's transaction id, or on
SQLite the next value of the one-row `event_feed_clock` counter. Events written before this revision get
0: they sort before every later one.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("dispatch_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("feed_txn", sa.BigInteger, nullable=False, server_default=sa.text("0")))
    op.create_index(
        "ix_dispatch_events_feed_txn_dispatch_id_seq", "dispatch_events", ["feed_txn", "dispatch_id", "seq"]
    )
    clock = op.create_table(
        "event_feed_clock",
        sa.Column("id", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("last_txn", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_event_feed_clock"),
    )
    op.bulk_insert(clock, [{"id": 1, "last_txn": 0}])


def downgrade() -> None:
    op.drop_table("event_feed_clock")
    op.drop_index("ix_dispatch_events_feed_txn_dispatch_id_seq", table_name="dispatch_events")
    with op.batch_alter_table("dispatch_events", schema=None) as batch_op:
        batch_op.drop_column("feed_txn")
