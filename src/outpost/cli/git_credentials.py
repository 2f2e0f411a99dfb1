"""`outpost git-credentials list|set|delete|versions|retire`: your tenant's credentials for private git
repositories."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click
from rich import box
from rich.table import Table
from rich.text import Text

from outpost.cli import display
from outpost.cli.client import ApiClient, build_request
from outpost.cli.secret_versions import show_versions
from outpost.errors import InvalidInput
from outpost.schemas.git_credentials import (
    MAX_TOKEN_CHARS,
    GitCredentialList,
    GitCredentialRead,
    GitCredentialSet,
    check_host,
)
from outpost.schemas.secret_versions import MAX_VERSION
from outpost.workspaces.git import DEFAULT_USERNAME


@click.group("git-credentials")
def git_credentials() -> None:
    """Credentials for git hosts, sent when your dispatches fetch or push over HTTPS (never shown)."""


@git_credentials.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def credentials_list(as_json: bool) -> None:
    """List the hosts your tenant has a credential for, with their usernames (never the token)."""
    with ApiClient.from_environment() as api:
        found = api.list_git_credentials()
    if as_json:
        click.echo(GitCredentialList(items=found).model_dump_json())
        return
    display.show(_table(found))


@git_credentials.command("set")
@click.argument("host")
@click.option("--username", default=DEFAULT_USERNAME, show_default=True, help="Sent with the token.")
@click.option("--keep-previous", is_flag=True, help="Keep the earlier versions until you retire them.")
def credentials_set(host: str, username: str, keep_previous: bool) -> None:
    """Set your tenant's credential for HOST (`github.com`, `git.example:8443`), replacing any earlier
    one. The token is read from stdin, never from the command line, where other users of this machine
    could see it; at a terminal it is asked for without being shown.

    With --keep-previous the earlier versions stay stored until `outpost git-credentials retire HOST
    VERSION`: retire the old one once the new one works, or the new one to go back."""
    checked_host = _checked_host(host)
    body = build_request(
        GitCredentialSet, username=username, token=_read_token(), retire_previous=not keep_previous
    )
    with ApiClient.from_environment() as api:
        stored = api.set_git_credential(checked_host, body)
    click.echo(f"git credential for {stored.host} set (username {stored.username})")


@git_credentials.command("delete")
@click.argument("host")
def credentials_delete(host: str) -> None:
    """Delete your tenant's credential for HOST: its repositories are fetched without one again."""
    checked_host = _checked_host(host)
    with ApiClient.from_environment() as api:
        api.delete_git_credential(checked_host)
    click.echo(f"git credential for {checked_host} deleted")


@git_credentials.command("versions")
@click.argument("host")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def credentials_versions(host: str, as_json: bool) -> None:
    """List the live versions of your tenant's credential for HOST (never the token); the newest is the
    one runs use."""
    checked_host = _checked_host(host)
    with ApiClient.from_environment() as api:
        found = api.list_git_credential_versions(checked_host)
    show_versions(found, as_json=as_json)


@git_credentials.command("retire")
@click.argument("host")
@click.argument("version", type=click.IntRange(1, MAX_VERSION))
def credentials_retire(host: str, version: int) -> None:
    """Retire VERSION of your tenant's credential for HOST: the old one at the end of a rotation, or the
    new one to undo it."""
    checked_host = _checked_host(host)
    with ApiClient.from_environment() as api:
        api.retire_git_credential_version(checked_host, version)
    click.echo(f"git credential for {checked_host}: version {version} retired")


def _checked_host(host: str) -> str:
    try:
        return check_host(host)
    except ValueError as exc:
        raise InvalidInput(f"host: {exc}", field="host") from None


def _read_token() -> str:
    if sys.stdin.isatty():
        # At a terminal the token is typed or pasted: hidden, so it stays off the screen and recordings.
        typed = click.prompt("token", default="", hide_input=True, show_default=False, err=True)
        token = str(typed).strip()
    else:
        token = sys.stdin.read(MAX_TOKEN_CHARS + 2).strip()
    if not token:
        raise InvalidInput(
            'no token on stdin: pipe it in, as in `printf %s "$TOKEN" | outpost git-credentials set HOST`',
            field="token",
        )
    return token


def _table(found: Sequence[GitCredentialRead]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for header in ("HOST", "USERNAME", "UPDATED"):
        table.add_column(header, no_wrap=True)
    for row in found:
        table.add_row(Text(row.host), Text(row.username), Text(display.when(row.updated_at)))
    return table
