"""Tenants keep their policy: caps below the server's limits, and hosts added to the egress allowlist.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

from outpost.db.types import PortableJSON

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.add_column(sa.Column("limits", PortableJSON, nullable=True))
        batch_op.add_column(sa.Column("egress_allow", PortableJSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.drop_column("egress_allow")
        batch_op.drop_column("limits")
