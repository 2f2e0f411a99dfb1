"""procrastinate's schema, which the procrastinate queue backend needs beside Outpost's own tables.

The migration step applies it (`upgrade_to_head(store, job_queue=True)`) when the database has none, from
the `schema.sql` of the installed procrastinate, and records that version in a comment on its jobs table.
Outpost was built and tested against procrastinate PINNED_VERSION (its schema as of migration 03.04.00).

Outpost calls a few of procrastinate's SQL functions and reads its two tables inside its own transactions
(`db.repositories.queue_jobs`): the job and the row it is for must commit together. procrastinate versions
those functions in their names (`_v1`), so a schema that has them keeps the behaviour Outpost relies on;
`check_job_queue_schema` refuses to start on a schema without them. A later procrastinate whose schema
differs needs its own migrations (`procrastinate schema --migrations-path`) applied by the operator: the
check logs a warning when the recorded version is not the installed one.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import Connection as SyncConnection
from sqlalchemy import text

from outpost.db.store import Connection
from outpost.errors import Unavailable

log = logging.getLogger(__name__)

PINNED_VERSION = "3.10.0"
"""The procrastinate release Outpost's use of its schema was written and tested against."""
PINNED_FUNCTIONS = (
    "procrastinate_defer_jobs_v1(procrastinate_job_to_defer_v1[])",
    "procrastinate_finish_job_v1(bigint, procrastinate_job_status, boolean)",
    # Not called: its presence pins the channel names and payload that wake workers (`queue_jobs`
    # sends the same NOTIFY when it brings a waiting job forward).
    "procrastinate_notify_queue_job_inserted_v1()",
)
"""procrastinate's SQL functions Outpost calls inside its own transactions, or imitates."""
_COMMENT_PREFIX = "procrastinate schema "


def installed_version() -> str:
    import procrastinate  # noqa: PLC0415 - the queue backend's library loads only when it is chosen

    version: str = procrastinate.__version__
    return version


def apply_if_missing(connection: SyncConnection) -> bool:
    """Create procrastinate's tables, types and functions unless its jobs table exists. True when it did.

    Run it inside the migration's transaction (which holds the migration lock): concurrent starts then
    apply it once.
    """
    if connection.execute(text("SELECT to_regclass('procrastinate_jobs')")).scalar() is not None:
        return False
    from procrastinate.schema import SchemaManager  # noqa: PLC0415 - loads only when the backend is chosen

    # Executed with no parameters, yet the driver still reads `%` as a placeholder marker.
    connection.exec_driver_sql(SchemaManager.get_schema().replace("%", "%%"))
    comment = f"{_COMMENT_PREFIX}{installed_version()}, applied by Outpost"
    connection.execute(text(f"COMMENT ON TABLE procrastinate_jobs IS '{comment}'"))
    log.info("applied the procrastinate %s schema", installed_version())
    return True


async def check_job_queue_schema(conn: Connection) -> None:
    """Raises Unavailable when the schema lacks a function Outpost calls (never applied, or from an
    incompatible procrastinate); warns when it was applied by another procrastinate version."""
    missing = [name for name in PINNED_FUNCTIONS if not await _function_exists(conn, name)]
    if missing:
        raise Unavailable(
            f"the database has no procrastinate function {missing[0]}: run `outpost db upgrade` with "
            "OUTPOST_WORKER__QUEUE=procrastinate, or apply the schema of procrastinate "
            f"{PINNED_VERSION}"
        )
    recorded = await _recorded_version(conn)
    if recorded is not None and recorded != installed_version():
        log.warning(
            "the procrastinate schema was applied by procrastinate %s and this is %s: apply its "
            "migrations in between if there are any", recorded, installed_version(),
        )  # fmt: skip


async def _function_exists(conn: Connection, signature: str) -> bool:
    found: Any = (await conn.execute(text("SELECT to_regprocedure(:sig)"), {"sig": signature})).scalar()
    return found is not None


async def _recorded_version(conn: Connection) -> str | None:
    """The version the comment on the jobs table names; None for a schema Outpost did not apply."""
    query = text("SELECT obj_description('procrastinate_jobs'::regclass, 'pg_class')")
    comment = (await conn.execute(query)).scalar()
    if not isinstance(comment, str) or not comment.startswith(_COMMENT_PREFIX):
        return None
    return comment.removeprefix(_COMMENT_PREFIX).split(",", 1)[0]
