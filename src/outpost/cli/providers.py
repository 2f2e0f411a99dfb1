"""`outpost providers list|set|reset`: your tenant's own keys (and, for admins, URLs) for model providers."""

from __future__ import annotations

import sys
from typing import Any

import click

from outpost.cli import display
from outpost.cli.client import ApiClient, build_request
from outpost.errors import InvalidInput
from outpost.schemas.providers import MAX_API_KEY_CHARS, ProviderRead, ProviderUpdate


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
@click.option("--base-url", metavar="URL", help="Admin keys only: send this tenant's calls to URL.")
@click.option("--clear-base-url", is_flag=True, help="Admin keys only: use the server's URL again.")
def providers_set(
    name: str, api_key_stdin: bool, clear_api_key: bool, base_url: str | None, clear_base_url: bool
) -> None:
    """Set your tenant's own key or URL for provider NAME. The key is read from stdin, never from the
    command line, where other users of this machine could see it."""
    fields: dict[str, Any] = {}
    if api_key_stdin and clear_api_key:
        raise InvalidInput("give either --api-key-stdin or --clear-api-key, not both")
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
