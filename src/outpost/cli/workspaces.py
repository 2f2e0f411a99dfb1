"""`outpost workspaces list|delete`: your tenant's persistent workspaces and the quota they share."""

from __future__ import annotations

import click

from outpost.cli import display
from outpost.cli.client import ApiClient


@click.group()
def workspaces() -> None:
    """Persistent workspaces: kept between dispatches that name them with `dispatch --workspace NAME`."""


@workspaces.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the page (with quota and usage) as JSON.")
def workspaces_list(as_json: bool) -> None:
    """List your workspaces, with what they take of your tenant's quota."""
    with ApiClient.from_environment() as api:
        page = api.list_workspaces()
    if as_json:
        display.print_json(page)
        return
    if page.items:
        display.show(display.workspace_table(page.items))
    click.echo(f"used {display.size(page.used_bytes)} of {display.size(page.quota_bytes)}")


@workspaces.command("delete")
@click.argument("workspace_id", metavar="ID")
def workspaces_delete(workspace_id: str) -> None:
    """Delete workspace ID and its files. One in use by a dispatch is kept: wait for it, or cancel it."""
    with ApiClient.from_environment() as api:
        api.delete_workspace(workspace_id)
    click.echo(f"workspace {workspace_id} deleted")
