"""`outpost agents`: the agent CLIs on this machine (installed? ready? provider configured?) and
`outpost agents install`. Runs on the server machine and reads its settings (OUTPOST_AGENTS__INSTALL_DIR)."""

from __future__ import annotations

import json
import time
from typing import Any

import click
from pydantic import ValidationError
from pydantic_settings import SettingsError
from rich import box
from rich.table import Table

from outpost.agents.install import install, is_current
from outpost.agents.pins import ALL_INSTALLS
from outpost.agents.status import agent_statuses, configured_providers
from outpost.cli import display
from outpost.domain.dispatch import AgentName
from outpost.errors import InvalidInput
from outpost.settings import Settings

JSON_HELP = "Print a JSON list instead of a table."


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@click.pass_context
def agents(ctx: click.Context, as_json: bool) -> None:
    """The agent CLIs: without a subcommand, list them (like `agents list`)."""
    if ctx.invoked_subcommand is None:
        _show(as_json)


@agents.command("list")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
def list_agents(as_json: bool) -> None:
    """List every agent: its pinned package, the installed version, whether it is ready to run, and
    which of its model providers have a key or base URL configured."""
    _show(as_json)


@agents.command("install")
@click.argument("names", nargs=-1, metavar="[NAME]...")
def install_agents(names: tuple[str, ...]) -> None:
    """Install the pinned CLIs of the agents NAME (default: all) under OUTPOST_AGENTS__INSTALL_DIR.
    Agents already installed at their pin are left alone."""
    chosen = _chosen(names)
    install_dir = _load_settings().agents.install_dir
    for name in chosen:
        pinned = ALL_INSTALLS.get(name)
        if pinned is None:
            click.echo(f"{name}: nothing to install")
        elif is_current(pinned, install_dir):
            click.echo(f"{name}: {pinned.spec} already installed")
        else:
            started = time.monotonic()
            install(pinned, install_dir)
            click.echo(f"{name}: installed {pinned.spec} in {time.monotonic() - started:.1f} s")


def _chosen(names: tuple[str, ...]) -> list[str]:
    """The agents to install, in the order given (all by default); raises InvalidInput for an unknown
    name before anything is installed."""
    known = [agent.value for agent in AgentName]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise InvalidInput(f"unknown agent {unknown[0]!r} (known: {', '.join(sorted(known))})")
    return list(dict.fromkeys(names)) if names else list(ALL_INSTALLS)


def _show(as_json: bool) -> None:
    settings = _load_settings()
    statuses = agent_statuses(settings.agents.install_dir, configured_providers(settings.providers))
    rows = [status.as_dict() for status in statuses]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    display.show(_table(rows))


def _table(rows: list[dict[str, Any]]) -> Table:
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("agent", "package", "installed", "ready", "provider keys"):
        table.add_column(column, overflow="fold")
    for row in rows:
        package = f"{row['package']}@{row['pin']}" if row["package"] else "-"
        installed = row["installed"] or ("missing" if row["package"] else "-")
        ready = "yes" if row["ready"] else f"no: {row['reason']}"
        if row["providers"]:
            keys = ", ".join(row["providers_configured"]) or f"none (any of: {', '.join(row['providers'])})"
        else:
            keys = "-"
        table.add_row(row["agent"], package, installed, ready, keys)
    return table


def _load_settings() -> Settings:
    """The settings, like the server commands read them; kept here because importing `cli.server` (the
    web stack) would make these quick commands slow."""
    try:
        return Settings()
    except SettingsError as exc:
        raise InvalidInput(f"invalid setting: {exc}; check the OUTPOST_* variables") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        field = "__".join(str(part) for part in first["loc"]).upper()
        raise InvalidInput(f"invalid setting OUTPOST_{field}: {first['msg']}") from exc
