"""Commands that run on the server machine itself: serve, db upgrade, tenants create/set/show (offline)."""

from __future__ import annotations

import asyncio
import gc
import socket
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click
import uvicorn
from pydantic import ValidationError

from outpost.api.app import create_app
from outpost.app import Container, build_container
from outpost.audit.entries import cli_origin
from outpost.cli.offline import load_settings, offline_audit_log
from outpost.db.migrate import upgrade_to_head
from outpost.db.repositories.tenants import TenantRow
from outpost.db.store import Store
from outpost.domain.limits import TENANT_CAPS
from outpost.errors import InvalidInput
from outpost.logs import configure_logging
from outpost.schemas.convert import tenant_policy_read
from outpost.schemas.keys import TenantCreate
from outpost.schemas.tenants import TenantPolicyUpdate
from outpost.secrets.startup import check_master_keys
from outpost.services.audit import AuditService
from outpost.services.keys import KeyService
from outpost.worker.queue.factory import check_queue_database

T = TypeVar("T")


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", default=8080, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on."
)
def serve(host: str, port: int) -> None:
    """Serve the API. On SQLite (the embedded system) this process also runs the dispatches; on
    PostgreSQL `outpost worker` processes do, unless OUTPOST_WORKER__ENABLED=true."""
    settings = load_settings()
    check_queue_database(settings)
    configure_logging(settings.log_level)
    # Before the container exists: it would make a key file, and a wrong key must be one clear line.
    asyncio.run(check_master_keys(settings))
    container = build_container(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    container.check_sandbox()  # before the server starts, so that the problem is one clear line
    app = create_app(container)
    # Everything built so far lives as long as the server: keep it out of the collector's full passes,
    # which otherwise stall requests for 60-80 ms now and then.
    gc.collect()
    gc.freeze()
    config = uvicorn.Config(
        app, host=host, port=port, log_config=None, access_log=False, loop="uvloop", http="httptools"
    )
    _Server(config, container).run()


class _Server(uvicorn.Server):
    """Ends the event streams first when it stops: they would otherwise hold the graceful shutdown open."""

    def __init__(self, config: uvicorn.Config, container: Container) -> None:
        super().__init__(config)
        self._container = container

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await self._container.end_streams()
        await super().shutdown(sockets)


@click.group()
def db() -> None:
    """Database administration."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply every pending migration (and procrastinate's schema when the queue is procrastinate)."""
    settings = load_settings()
    store = Store(settings.resolved_database_url)

    async def run() -> None:
        try:
            await upgrade_to_head(store, job_queue=settings.worker.queue == "procrastinate")
        finally:
            await store.dispose()

    asyncio.run(run())
    click.echo("database is up to date")


@click.group()
def tenants() -> None:
    """Tenant administration (offline: works on the database directly)."""


@tenants.command("create")
@click.argument("name")
@click.option("--admin", is_flag=True, help="Make the first key an admin key (can create tenants).")
def tenants_create(name: str, admin: bool) -> None:
    """Create tenant NAME and print its first API key (shown only this once)."""
    try:
        request = TenantCreate(name=name, admin=admin)
    except ValidationError as exc:
        raise InvalidInput(
            "tenant names are 1-63 letters, digits, '.', '_' or '-', starting alphanumeric"
        ) from exc

    async def create(keys: KeyService) -> str:
        tenant, issued = await keys.create_tenant(request.name, admin=request.admin, origin=cli_origin())
        return f"tenant {tenant.name} ({tenant.id})\n{issued.token}"

    click.echo(run_offline(create))


@tenants.command("set")
@click.argument("name")
@click.option("--max-memory-mb", type=int, help="Cap on a dispatch's memory_mb.")
@click.option("--max-pids", type=int, help="Cap on a dispatch's pids.")
@click.option("--max-cpu-cores", type=float, help="Cap on a dispatch's cpu_cores.")
@click.option("--max-disk-mb", type=int, help="Cap on a dispatch's disk_mb.")
@click.option("--max-timeout-s", type=int, help="Cap on a dispatch's timeout_s.")
@click.option("--egress-allow", "hosts", multiple=True, metavar="HOST", help="Replaces the egress hosts.")
@click.option("--clear-limits", is_flag=True, help="Remove every cap not given in this command.")
@click.option("--clear-egress", is_flag=True, help="Remove every egress host.")
@click.option(
    "--monthly-budget-usd", "budget_usd", type=float, metavar="USD",
    help="What the tenant may spend per calendar month (UTC).",
)  # fmt: skip
@click.option("--clear-budget", is_flag=True, help="Remove the monthly budget.")
@click.option(
    "--max-concurrent-dispatches", "concurrency_cap", type=int, metavar="N",
    help="How many of its dispatches may run at once; further ones wait queued.",
)  # fmt: skip
@click.option("--clear-concurrency-cap", is_flag=True, help="Remove the cap on dispatches at once.")
def tenants_set(
    name: str,
    hosts: tuple[str, ...],
    clear_limits: bool,
    clear_egress: bool,
    budget_usd: float | None,
    clear_budget: bool,
    concurrency_cap: int | None,
    clear_concurrency_cap: bool,
    **caps: float | None,
) -> None:
    """Change tenant NAME's policy and print it as JSON.

    Each --max-* option sets one cap and keeps the others. A cap lowers the server's limit for this
    tenant, never raises it. --egress-allow (repeatable) replaces the tenant's list of hosts its runs may
    reach besides the server's and each dispatch's own: `host`, `*.suffix`, optional `:port`.
    --monthly-budget-usd sets what its dispatches may cost per calendar month (UTC): past it, new
    dispatches get 402 and running ones are stopped at their next model call.
    --max-concurrent-dispatches caps how many of its dispatches are provisioning or running at once.
    """
    update = policy_update(
        caps, hosts, clear_limits=clear_limits, clear_egress=clear_egress, budget_usd=budget_usd,
        clear_budget=clear_budget, concurrency=(concurrency_cap, clear_concurrency_cap),
    )  # fmt: skip

    async def apply(keys: KeyService) -> TenantRow:
        tenant = await keys.get_tenant_named(name)
        return await keys.update_tenant_policy(tenant.id, update, origin=cli_origin())

    click.echo(tenant_policy_read(run_offline(apply)).model_dump_json(indent=2))


@tenants.command("show")
@click.argument("name")
def tenants_show(name: str) -> None:
    """Print tenant NAME's policy as JSON."""

    async def show(keys: KeyService) -> TenantRow:
        return await keys.get_tenant_named(name)

    click.echo(tenant_policy_read(run_offline(show)).model_dump_json(indent=2))


def policy_update(
    caps: dict[str, float | None],
    hosts: tuple[str, ...],
    *,
    clear_limits: bool,
    clear_egress: bool,
    budget_usd: float | None = None,
    clear_budget: bool = False,
    concurrency: tuple[int | None, bool] = (None, False),
) -> TenantPolicyUpdate:
    """The options of `tenants set` as the API's merge patch. Raises InvalidInput naming the option."""
    given = {option.removeprefix("max_"): value for option, value in caps.items() if value is not None}
    if clear_egress and hosts:
        raise InvalidInput("give either --egress-allow or --clear-egress, not both")
    body: dict[str, object] = {}
    if clear_limits:
        body["limits"] = {**dict.fromkeys(TENANT_CAPS), **given} if given else None
    elif given:
        body["limits"] = given
    if clear_egress or hosts:
        body["egress_allow"] = list(hosts) or None
    body.update(_budget_patch(budget_usd, clear_budget))
    body.update(_concurrency_patch(*concurrency))
    if not body:
        raise InvalidInput(
            "nothing to change: give a --max-* option, --egress-allow, --monthly-budget-usd, or a --clear-*"
            " option"
        )
    try:
        return TenantPolicyUpdate.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        message = first["msg"].removeprefix("Value error, ")
        raise InvalidInput(f"{_option_of(first['loc'])}: {message}") from exc


def _budget_patch(budget_usd: float | None, clear_budget: bool) -> dict[str, object]:
    """The budget part of the merge patch: nothing, a new budget, or `null` to remove it."""
    if clear_budget and budget_usd is not None:
        raise InvalidInput("give either --monthly-budget-usd or --clear-budget, not both")
    return {"monthly_budget_usd": budget_usd} if clear_budget or budget_usd is not None else {}


def _concurrency_patch(cap: int | None, clear: bool) -> dict[str, object]:
    """The concurrency cap's part of the merge patch: nothing, a new cap, or `null` to remove it."""
    if clear and cap is not None:
        raise InvalidInput("give either --max-concurrent-dispatches or --clear-concurrency-cap, not both")
    return {"max_concurrent_dispatches": cap} if clear or cap is not None else {}


def _option_of(loc: tuple[int | str, ...]) -> str:
    """The `tenants set` option a validation error is about: ('limits', 'pids') → --max-pids."""
    if loc[0] == "limits" and len(loc) > 1:
        return f"--max-{str(loc[1]).replace('_', '-')}"
    if loc[0] == "monthly_budget_usd":
        return "--monthly-budget-usd"
    if loc[0] == "max_concurrent_dispatches":
        return "--max-concurrent-dispatches"
    return "--egress-allow"


def run_offline(work: Callable[[KeyService], Awaitable[T]]) -> T:
    """Run `work` on the configured database directly (migrated first), without a server, with the
    server's master keys (made on a first start, as `serve` would). Raises MasterKeyError,
    SecretUnreadable or AuditKeyMismatch when they are not the server's."""
    settings = load_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(settings.resolved_database_url)

    async def run() -> T:
        try:
            await check_master_keys(settings)
            audit = offline_audit_log(settings)
            audit_service = AuditService(store, audit, settings.retention.audit_days)
            await audit_service.check_key()
            await audit_service.seal_head()  # as a server's start does: this may be the database's first use
            return await work(KeyService(store, 0, audit))
        finally:
            await store.dispose()

    return asyncio.run(run())
