"""Dispatches keep the hosts they added to the egress allowlist.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

from outpost.db.types import PortableJSON

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("dispatches", schema=None) as batch_op:
        batch_op.add_column(sa.Column("egress_allow", PortableJSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("dispatches", schema=None) as batch_op:
        batch_op.drop_column("egress_allow")
