"""Apply the one Alembic migration chain to a store."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text

from outpost.db.job_queue_schema import apply_if_missing
from outpost.db.store import Store

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Any fixed 64-bit number: serializes concurrent upgrades from several processes on PostgreSQL.
_PG_MIGRATION_LOCK_ID = 0x6F7574706F7374


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


async def upgrade_to_head(store: Store, *, job_queue: bool = False) -> None:
    """Bring the schema to the newest revision; safe to run from several processes at once. With
    `job_queue` (the procrastinate queue backend, PostgreSQL only), also create procrastinate's schema
    when the database has none (`db.job_queue_schema`)."""
    async with store.write() as conn:
        if store.dialect == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _PG_MIGRATION_LOCK_ID})
        await conn.run_sync(_upgrade)
        if job_queue and store.dialect == "postgresql":
            await conn.run_sync(apply_if_missing)


def _upgrade(connection: Connection) -> None:
    command.upgrade(alembic_config(connection), "head")
