"""Encrypted secrets, and tenants' own model provider settings.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

from outpost.db.types import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "secrets",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("tenant_id", sa.String(26), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("sealed", sa.LargeBinary, nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("retired_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name="fk_secrets_tenant_id_tenants"),
        sa.PrimaryKeyConstraint("id", name="pk_secrets"),
        sa.UniqueConstraint("tenant_id", "name", "version", name="uq_secrets_tenant_id_name_version"),
    )
    op.create_table(
        "tenant_providers",
        sa.Column("tenant_id", sa.String(26), nullable=False),
        sa.Column("provider", sa.String(40), nullable=False),
        sa.Column("base_url", sa.String(2048), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name="fk_tenant_providers_tenant_id_tenants"),
        sa.PrimaryKeyConstraint("tenant_id", "provider", name="pk_tenant_providers"),
    )


def downgrade() -> None:
    op.drop_table("tenant_providers")
    op.drop_table("secrets")
