"""Entry point of the `outpost` command. Errors end in one line on stderr and a non-zero exit code.

Exit codes (mapped here, and nowhere else):
    0  success (for `dispatch --wait/--follow`: the dispatch succeeded)
    1  an error the user can fix: bad input, a bad or revoked key, no such dispatch, a conflict
    2  a usage error (click)
    3  the server cannot be reached, is not ready, or failed
    4  `dispatch --wait/--follow`: the dispatch ended failed, timed_out or cancelled
    5  `audit verify`: the audit log does not verify (a row edited, deleted or reordered)
"""

from __future__ import annotations

import importlib
import sys

import click

from outpost import __version__
from outpost.audit.verify import ChainBroken
from outpost.cli.errors import DispatchUnsuccessful
from outpost.errors import OutpostError, Unavailable

EXIT_USER_ERROR = 1
EXIT_UNAVAILABLE = 3
EXIT_DISPATCH_UNSUCCESSFUL = 4
EXIT_AUDIT_BROKEN = 5
# Most specific first: the first class the error is an instance of decides.
EXIT_CODES: list[tuple[type[OutpostError], int]] = [
    (DispatchUnsuccessful, EXIT_DISPATCH_UNSUCCESSFUL),
    (ChainBroken, EXIT_AUDIT_BROKEN),
    (Unavailable, EXIT_UNAVAILABLE),
]
# Command name → "module:attribute". A command's module is imported only when it runs: the server's
# imports (FastAPI, SQLAlchemy, Alembic) would otherwise add a second or more to every client command.
COMMANDS = {
    "serve": "outpost.cli.server:serve",
    "worker": "outpost.cli.worker:worker",
    "db": "outpost.cli.server:db",
    "tenants": "outpost.cli.server:tenants",
    "keys": "outpost.cli.keys:keys",
    "dispatch": "outpost.cli.dispatches:dispatch",
    "status": "outpost.cli.dispatches:status",
    "list": "outpost.cli.dispatches:list_dispatches",
    "logs": "outpost.cli.dispatches:logs",
    "cancel": "outpost.cli.dispatches:cancel",
    "artifacts": "outpost.cli.artifacts:artifacts",
    "workspaces": "outpost.cli.workspaces:workspaces",
    "agents": "outpost.cli.agents:agents",
    "providers": "outpost.cli.providers:providers",
    "git-credentials": "outpost.cli.git_credentials:git_credentials",
    "secrets": "outpost.cli.secrets:secrets",
    "mcp": "outpost.cli.mcp:mcp",
    "usage": "outpost.cli.usage:usage",
    "audit": "outpost.cli.audit:audit",
}


class LazyGroup(click.Group):
    """A group whose subcommands are looked up in COMMANDS and imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module_name, _, attribute = COMMANDS[cmd_name].partition(":")
        command = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{COMMANDS[cmd_name]} is not a click command")
        return command


@click.group(cls=LazyGroup)
@click.version_option(__version__, prog_name="outpost")
def cli() -> None:
    """Outpost: run AI coding agents as a fleet.

    Commands other than serve, worker, db, tenants and secrets talk to the server at OUTPOST_URL
    (default http://127.0.0.1:8080) with the key in OUTPOST_API_KEY.
    """


def main() -> None:
    try:
        cli(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("outpost: aborted", err=True)
        sys.exit(EXIT_USER_ERROR)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except OutpostError as exc:
        click.echo(f"outpost: {exc.detail}", err=True)
        sys.exit(exit_code_for(exc))


def exit_code_for(exc: OutpostError) -> int:
    for error_type, code in EXIT_CODES:
        if isinstance(exc, error_type):
            return code
    return EXIT_USER_ERROR
