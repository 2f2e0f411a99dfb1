"""`outpost secrets status|reseal`: which master key seals how many stored secrets, and moving them all
under the current key (offline: works on the database directly, with the server's OUTPOST_* settings).

A master key rotation, step by step:
1. Start every server with the new key as OUTPOST_SECRETS__MASTER_KEY and the old one in
   OUTPOST_SECRETS__PREVIOUS_MASTER_KEYS (with several servers, first add the new key to every server's
   previous keys, then swap: no server then meets a row it cannot open).
2. Run `outpost secrets reseal` (while the servers run; it can be stopped and run again).
3. When `outpost secrets status` shows no live secret under the old key, drop it from the servers'
   settings.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click
import orjson
from rich import box
from rich.table import Table
from rich.text import Text

from outpost.audit.chain import KEY_PURPOSE, AuditEntry
from outpost.audit.entries import cli_origin
from outpost.audit.log import AuditLog
from outpost.cli import display
from outpost.cli.offline import load_settings
from outpost.db.migrate import upgrade_to_head
from outpost.db.store import Store
from outpost.secrets.box import SecretUnreadable
from outpost.secrets.keyring import KeyHolding, MasterKeyring
from outpost.secrets.master_key import PREVIOUS_ENV_NAME, load_keyring
from outpost.secrets.reseal import DEFAULT_BATCH_SIZE, ResealReport, key_holdings, reseal_secrets

T = TypeVar("T")
_NAMED = 5  # unreadable rows named in a message


@click.group()
def secrets() -> None:
    """Master keys and the stored secrets sealed under them (offline: reads the database directly)."""


@secrets.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def secrets_status(as_json: bool) -> None:
    """Show how many live secrets each master key sealed: the current key, the previous ones configured,
    and any key the database needs that is not configured. A previous key under which no secret is
    left can be dropped."""
    holdings = run_with_keys(key_holdings)
    if as_json:
        rows = [{"key_id": h.key_id, "role": h.role, "live_secrets": h.live_secrets} for h in holdings]
        click.echo(orjson.dumps({"keys": rows}).decode())
        return
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for header in ("KEY ID", "ROLE", "LIVE SECRETS"):
        table.add_column(header, no_wrap=True)
    for held in holdings:
        table.add_row(Text(held.key_id), Text(held.role), Text(str(held.live_secrets)))
    display.show(table)
    click.echo(verdict(holdings))


def verdict(holdings: list[KeyHolding]) -> str:
    """One line that says what the operator can do next."""
    missing = sum(held.live_secrets for held in holdings if held.role == "missing")
    previous = [held for held in holdings if held.role == "previous"]
    waiting = sum(held.live_secrets for held in previous)
    if missing:
        return (
            f"{missing} live secrets are sealed under keys not configured: add those keys to "
            f"{PREVIOUS_ENV_NAME}, then run `outpost secrets reseal`"
        )
    if waiting:
        return f"{waiting} live secrets are still sealed under previous keys: run `outpost secrets reseal`"
    if previous:
        return (
            f"no live secret is sealed under a previous key: they can be dropped from the servers' "
            f"{PREVIOUS_ENV_NAME} (`outpost audit verify` still needs them for audit rows older than the "
            "rotation)"
        )
    return "every live secret is sealed under the current key"


@secrets.command("reseal")
@click.option(
    "--batch-size", type=click.IntRange(1, 10_000), default=DEFAULT_BATCH_SIZE, show_default=True,
    help="Rows re-sealed per transaction.",
)  # fmt: skip
def secrets_reseal(batch_size: int) -> None:
    """Seal every live secret again under the current master key, in batches of short transactions.
    Safe while servers run, and to stop and run again. Rows that do not decrypt under the key they name
    are left as they are, and named (exit status 3). Each run is recorded in the audit log."""

    async def reseal(store: Store, keyring: MasterKeyring) -> tuple[ResealReport, str]:
        report = await reseal_secrets(store, keyring, batch_size)
        # Recorded under the current key: the chain's head then verifies on servers given only that key.
        detail = {"key_id": keyring.key_id, "resealed": report.resealed, "unreadable": len(report.unreadable)}
        entry = AuditEntry("secret.reseal", None, cli_origin(), None, detail)
        await AuditLog.from_master_keys(keyring.derive_all(KEY_PURPOSE)).record(store, [entry])
        return report, keyring.key_id

    report, key_id = run_with_keys(reseal)
    click.echo(f"re-sealed {report.resealed} secrets under master key id {key_id}")
    if report.unreadable:
        named = "; ".join(report.unreadable[:_NAMED])
        more = f" and {len(report.unreadable) - _NAMED} more" if len(report.unreadable) > _NAMED else ""
        raise SecretUnreadable(
            f"{len(report.unreadable)} stored secrets do not decrypt under the key they name and were left "
            f"as they are: {named}{more}; their tenants must set them again"
        )


def run_with_keys(work: Callable[[Store, MasterKeyring], Awaitable[T]]) -> T:
    """Run `work` on the configured database (migrated first) with the configured master keys; a missing
    key file is an error here, never a new key. Raises MasterKeyError."""
    settings = load_settings()
    keys = settings.secrets
    keyring = load_keyring(
        keys.master_key, keys.previous_master_keys, settings.resolved_master_key_file, create=False
    )
    store = Store(settings.resolved_database_url)

    async def run() -> T:
        try:
            await upgrade_to_head(store)
            return await work(store, keyring)
        finally:
            await store.dispose()

    return asyncio.run(run())
