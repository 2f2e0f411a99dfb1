"""Git workspaces: a dispatch's repository, persistent workspaces, and the artifacts runs leave.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

from outpost.db.types import PortableJSON, UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("dispatches", schema=None) as batch_op:
        batch_op.add_column(sa.Column("repo", PortableJSON, nullable=True))
        batch_op.add_column(sa.Column("base_commit", sa.String(64), nullable=True))
        batch_op.add_column(sa.Column("workspace_id", sa.String(26), nullable=True))
        batch_op.add_column(sa.Column("workspace_name", sa.String(200), nullable=True))
        batch_op.add_column(sa.Column("push_branch", sa.String(255), nullable=True))
    op.create_table(
        "artifacts",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("tenant_id", sa.String(26), nullable=False),
        sa.Column("dispatch_id", sa.String(26), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("object_key", sa.String(1024), nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("content_type", sa.String(255), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name="fk_artifacts_tenant_id_tenants"),
        sa.ForeignKeyConstraint(
            ["dispatch_id"], ["dispatches.id"], name="fk_artifacts_dispatch_id_dispatches"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_artifacts"),
        sa.UniqueConstraint("dispatch_id", "name", name="uq_artifacts_dispatch_id_name"),
    )
    op.create_index("ix_artifacts_expires_at", "artifacts", ["expires_at"])
    op.create_table(
        "workspaces",
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("tenant_id", sa.String(26), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("repo_url", sa.String(2048), nullable=True),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("busy_dispatch_id", sa.String(26), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("last_used_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name="fk_workspaces_tenant_id_tenants"),
        sa.PrimaryKeyConstraint("id", name="pk_workspaces"),
        sa.UniqueConstraint("tenant_id", "name", name="uq_workspaces_tenant_id_name"),
    )


def downgrade() -> None:
    op.drop_table("workspaces")
    op.drop_index("ix_artifacts_expires_at", table_name="artifacts")
    op.drop_table("artifacts")
    with op.batch_alter_table("dispatches", schema=None) as batch_op:
        batch_op.drop_column("push_branch")
        batch_op.drop_column("workspace_name")
        batch_op.drop_column("workspace_id")
        batch_op.drop_column("base_commit")
        batch_op.drop_column("repo")
