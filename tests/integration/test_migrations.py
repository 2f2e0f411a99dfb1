"""The Alembic chain produces exactly the schema the table definitions declare."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, inspect

from outpost.db.migrate import upgrade_to_head
from outpost.db.store import Store
from outpost.db.tables import metadata


def _schema_differences(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


async def test_migrations_produce_exactly_the_declared_schema(database_url: str) -> None:
    store = Store(database_url)
    try:
        await upgrade_to_head(store)
        async with store.read() as conn:
            differences = await conn.run_sync(_schema_differences)
            tables = await conn.run_sync(lambda sync: set(inspect(sync).get_table_names()))
        assert differences == []
        assert set(metadata.tables) <= tables
    finally:
        await store.dispose()


async def test_upgrading_twice_changes_nothing(database_url: str) -> None:
    store = Store(database_url)
    try:
        await upgrade_to_head(store)
        await upgrade_to_head(store)
        async with store.read() as conn:
            assert await conn.run_sync(_schema_differences) == []
    finally:
        await store.dispose()
