"""Dispatches keep the resource limits they asked for.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from outpost.db.types import PortableJSON

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("dispatches", schema=None) as batch_op:
        batch_op.add_column(sa.Column("limits", PortableJSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("dispatches", schema=None) as batch_op:
        batch_op.drop_column("limits")
