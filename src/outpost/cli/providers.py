"""`outpost providers list|set|reset|versions|retire`: your tenant's own keys (and, for admins, URLs)
for model providers."""

from __future__ import annotations

import sys
from typing import Any

import click

from outpost.cli import display
from outpost.cli.client import ApiClient, build_request
from outpost.cli.secret_versions import show_versions
from outpost.errors import InvalidInput
from outpost.schemas.providers import MAX_API_KEY_CHARS, ProviderRead, ProviderUpdate
from outpost.schemas.secret_versions import MAX_VERSION


@click.group()
def providers() -> None:
    """Model providers your tenant's runs call (the key in OUTPOST_API_KEY decides which tenant)."""


@providers.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def providers_list(as_json: bool) -> None:
    """List the providers: where calls go, and whose key the gateway sends (never the key itself)."""
    with ApiClient.from_environment() as api:
        found = api.list_providers()
    if as_json:
        click.echo("[" + ",".join(row.model_dump_json() for row in found) + "]")
        return
    display.show(display.provider_table(found))


@providers.command("set")
@click.argument("name")
@click.option("--api-key-stdin", is_flag=True, help="Read your tenant's key for NAME from stdin.")
@click.option("--clear-api-key", is_flag=True, help="Drop your tenant's key: the server's applies again.")
@click.option(
    "--keep-previous", is_flag=True,
    help="With --api-key-stdin: keep the earlier versions of the key until you retire them.",
)  # fmt: skip
@click.option("--base-url", metavar="URL", help="Admin keys only: send this tenant's calls to URL.")
@click.option("--clear-base-url", is_flag=True, help="Admin keys only: use the server's URL again.")
def providers_set(
    name: str,
    api_key_stdin: bool,
    clear_api_key: bool,
    keep_previous: bool,
    base_url: str | None,
    clear_base_url: bool,
) -> None:
    """Set your tenant's own key or URL for provider NAME. The key is read from stdin, never from the
    command line, where other users of this machine could see it.

    A new key replaces the old one, which is retired. To rotate with an overlap, give --keep-previous:
    new runs get the new key, and the old one stays stored until `outpost providers retire NAME VERSION`
    (retire the new version instead to go back to the old one)."""
    fields: dict[str, Any] = {}
    if api_key_stdin and clear_api_key:
        raise InvalidInput("give either --api-key-stdin or --clear-api-key, not both")
    if keep_previous and not api_key_stdin:
        raise InvalidInput("--keep-previous goes with --api-key-stdin (a new key)")
    if keep_previous:
        fields["retire_previous"] = False
    if base_url is not None and clear_base_url:
        raise InvalidInput("give either --base-url or --clear-base-url, not both")
    if api_key_stdin or clear_api_key:
        fields["api_key"] = _read_key() if api_key_stdin else None
    if base_url is not None or clear_base_url:
        fields["base_url"] = base_url
    if not fields:
        raise InvalidInput("nothing to change: give --api-key-stdin, --base-url or a --clear-* option")
    update = build_request(ProviderUpdate, **fields)
    with ApiClient.from_environment() as api:
        changed = api.update_provider(name, update)
    _describe(changed)


@providers.command("reset")
@click.argument("name")
def providers_reset(name: str) -> None:
    """Drop your tenant's own key and URL for provider NAME: the server's apply again."""
    with ApiClient.from_environment() as api:
        api.reset_provider(name)
    click.echo(f"provider {name}: the server's settings apply again")


@providers.command("versions")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def providers_versions(name: str, as_json: bool) -> None:
    """List the live versions of your tenant's key for provider NAME (never the key itself); the newest
    is the one runs get."""
    with ApiClient.from_environment() as api:
        found = api.list_key_versions(name)
    show_versions(found, as_json=as_json)


@providers.command("retire")
@click.argument("name")
@click.argument("version", type=click.IntRange(1, MAX_VERSION))
def providers_retire(name: str, version: int) -> None:
    """Retire VERSION of your tenant's key for provider NAME: the old key at the end of a rotation, or
    the new one to undo it (the next older live version is in force again)."""
    with ApiClient.from_environment() as api:
        api.retire_key_version(name, version)
        left = api.list_key_versions(name)
    now = f"version {left[0].version} is in force" if left else "the server's key applies again, if any"
    click.echo(f"provider {name}: key version {version} retired; {now}")


def _read_key() -> str:
    key = sys.stdin.read(MAX_API_KEY_CHARS + 2).strip()
    if not key:
        raise InvalidInput("no key on stdin: pipe the key into `outpost providers set NAME --api-key-stdin`")
    return key


def _describe(provider: ProviderRead) -> None:
    key = {"tenant": f"your key (version {provider.api_key_version})", "server": "the server's key"}
    click.echo(
        f"provider {provider.name}: calls go to {provider.base_url} with "
        f"{key.get(provider.api_key_source or '', 'no key')}"
    )
