"""`outpost keys create|list|revoke`: the API keys of the caller's tenant, managed over the REST API."""

from __future__ import annotations

import click

from outpost.cli import display
from outpost.cli.client import ApiClient, build_request
from outpost.schemas.keys import KeyCreate

MIN_EXPIRY_S = 60


@click.group()
def keys() -> None:
    """API keys of your tenant (the key in OUTPOST_API_KEY decides which tenant)."""


@keys.command("create")
@click.option("--name", default="default", show_default=True, help="A name to recognise the key by.")
@click.option("--admin", is_flag=True, help="An admin key (needs an admin key to create).")
@click.option(
    "--expires-in", "expires_in_s", type=click.IntRange(min=MIN_EXPIRY_S), metavar="SECONDS",
    help="Let the key expire after this many seconds (default: never).",
)  # fmt: skip
def keys_create(name: str, admin: bool, expires_in_s: int | None) -> None:
    """Create a key. The key itself goes to stdout, shown only this once; its id and prefix to stderr."""
    request = build_request(KeyCreate, name=name, admin=admin, expires_in_s=expires_in_s)
    with ApiClient.from_environment() as api:
        issued = api.create_key(request)
    click.echo(issued.key)
    kind = "admin key" if issued.admin else "key"
    display.note(f"{kind} {issued.id} ({issued.prefix}, {issued.name!r}): store it now, it is shown once")


@keys.command("list")
def keys_list() -> None:
    """List your tenant's keys, revoked and expired ones included (never the secrets)."""
    with ApiClient.from_environment() as api:
        found = api.list_keys()
    display.show(display.key_table(found))


@keys.command("revoke")
@click.argument("key_id", metavar="KEY_ID")
def keys_revoke(key_id: str) -> None:
    """Revoke a key of your tenant: requests with it fail from now on (revoking twice is harmless)."""
    with ApiClient.from_environment() as api:
        revoked = api.revoke_key(key_id)
    click.echo(f"revoked key {revoked.id} ({revoked.prefix})")
