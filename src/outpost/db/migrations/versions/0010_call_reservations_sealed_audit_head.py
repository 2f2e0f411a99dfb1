"""Budget reservations for model calls in flight, and a sealed audit head.

- `call_reservations`: one row per model call a gateway has let through for a tenant with a budget and
  not yet metered, holding what the call may cost at most. Admission of a call reads these with the
  tenant's spend, in one transaction under the tenant's lock (decision 0014).
- `audit_head.mac`: a MAC, under the audit key, over the head's seq and hash, so that cutting rows off the
  end of the log and moving the head back is detected (decision 0015). NULL until a server seals it.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

from outpost.db.types import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

ULID = 26


def upgrade() -> None:
    op.create_table(
        "call_reservations",
        sa.Column("id", sa.String(ULID), nullable=False),
        sa.Column("tenant_id", sa.String(ULID), nullable=False),
        sa.Column("dispatch_id", sa.String(ULID), nullable=False),
        sa.Column("micro_usd", sa.BigInteger, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_call_reservations"),
    )
    op.create_index("ix_call_reservations_tenant_id", "call_reservations", ["tenant_id"])
    op.create_index("ix_call_reservations_dispatch_id", "call_reservations", ["dispatch_id"])
    with op.batch_alter_table("audit_head", schema=None) as batch_op:
        batch_op.add_column(sa.Column("mac", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit_head", schema=None) as batch_op:
        batch_op.drop_column("mac")
    op.drop_index("ix_call_reservations_dispatch_id", table_name="call_reservations")
    op.drop_index("ix_call_reservations_tenant_id", table_name="call_reservations")
    op.drop_table("call_reservations")
