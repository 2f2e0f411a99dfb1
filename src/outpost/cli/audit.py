"""`outpost audit verify` (offline: reads the database directly, with the server's master key) and
`outpost audit export` (over the REST API, as JSON Lines)."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path

import click
from sqlalchemy.engine import make_url

from outpost.cli.client import ApiClient
from outpost.cli.offline import load_settings, offline_audit_log
from outpost.db.repositories import audit as audit_repo
from outpost.db.store import Store
from outpost.errors import InvalidInput
from outpost.services.audit import AuditService, VerifyReport
from outpost.settings import Settings

EXPORT_PAGE = 1000


@click.group()
def audit() -> None:
    """The tamper-evident audit log."""


@audit.command("verify")
def audit_verify() -> None:
    """Check every row of the audit log: its MAC, its link to the row before, and the head.

    Offline: reads the configured database (OUTPOST_DATABASE_URL, or the one in OUTPOST_DATA_DIR) with
    the server's master key (OUTPOST_SECRETS__MASTER_KEY or its key file); rows written before a master
    key rotation need the old key in OUTPOST_SECRETS__PREVIOUS_MASTER_KEYS. Exits 5 naming the first
    row that does not verify and why.
    """
    settings = load_settings()
    url = settings.resolved_database_url
    database = make_url(url).database if url.startswith("sqlite") else None
    if database is not None and not Path(database).is_file():
        raise InvalidInput(
            f"no database at {database}: set OUTPOST_DATA_DIR or OUTPOST_DATABASE_URL as the server does"
        )
    report = asyncio.run(_verify(settings))
    if report.first_seq is None:
        click.echo("audit log OK: no rows yet")
        return
    click.echo(
        f"audit log OK: {report.rows} rows, seq {report.first_seq} to {report.last_seq}, "
        f"head {report.head_hash}"
    )


@audit.command("export")
@click.option(
    "--after", type=click.IntRange(min=0), default=0, show_default=True, help="Start after this seq."
)
@click.option(
    "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write to FILE instead of stdout."
)
@click.option("--tenant", metavar="TENANT_ID", help="Admin keys: only this tenant's rows.")
def audit_export(after: int, output: Path | None, tenant: str | None) -> None:
    """Write the audit log as JSON Lines, oldest first: one row per line, with `prev_hash` and `hash`.

    A tenant key exports its tenant's rows, an admin key every row (or one tenant's with --tenant).
    With --output, the file appears whole or not at all.
    """
    with ApiClient.from_environment() as api:
        if output is None:
            count = _export(api, after, tenant, sys.stdout.write)
        else:
            count = _export_to_file(api, after, tenant, output)
    click.echo(f"exported {count} audit rows", err=True)


async def _verify(settings: Settings) -> VerifyReport:
    """Raises InvalidInput when the database has no audit log (nothing is created)."""
    log = offline_audit_log(settings)
    store = Store(settings.resolved_database_url)
    try:
        async with store.read() as conn:
            if not await audit_repo.has_audit_log(conn):
                raise InvalidInput("the database has no audit log yet: run `outpost db upgrade` first")
        return await AuditService(store, log, settings.retention.audit_days).verify()
    finally:
        await store.dispose()


def _export(api: ApiClient, after: int, tenant: str | None, write: Callable[[str], object]) -> int:
    """Write every row after `after`, page by page; returns how many."""
    count = 0
    while True:
        page = api.list_audit(after, EXPORT_PAGE, tenant)
        for item in page.items:
            write(item.model_dump_json() + "\n")
        count += len(page.items)
        if page.next_after is None:
            return count
        after = page.next_after


def _export_to_file(api: ApiClient, after: int, tenant: str | None, output: Path) -> int:
    """Written beside `output` and renamed into place once complete: a failed export leaves no half file."""
    staging = output.with_name(f".{output.name}.{os.getpid()}.partial")
    try:
        with staging.open("w", encoding="utf-8") as file:
            count = _export(api, after, tenant, file.write)
        staging.replace(output)
    except OSError as exc:
        raise InvalidInput(f"cannot write {output}: {exc.strerror}") from exc
    finally:
        staging.unlink(missing_ok=True)
    return count
