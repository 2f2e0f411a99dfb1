"""Dispatch commands over the REST API: dispatch, status, list, logs, cancel."""

from __future__ import annotations

import click

from outpost.cli import display
from outpost.cli.client import ApiClient, build_request
from outpost.cli.event_printer import EventPrinter, JsonEventPrinter
from outpost.cli.watch import EventSink, follow_events, page_events, raise_unless_succeeded, wait_until_ended
from outpost.domain.dispatch import AgentName, DispatchStatus, Tier
from outpost.errors import InvalidInput
from outpost.schemas.dispatches import DispatchCreate, DispatchRead

AGENTS = click.Choice([agent.value for agent in AgentName])
TIERS = click.Choice([tier.value for tier in Tier])
STATUSES = click.Choice([status.value for status in DispatchStatus])


def parse_pairs(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    """`NAME=VALUE` options → a dict; anything without a `=` after a non-empty name is a usage error."""
    pairs: dict[str, str] = {}
    for item in values:
        name, equals, value = item.partition("=")
        if not equals or not name:
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", ctx=ctx, param=param)
        pairs[name] = value
    return pairs


@click.command()
@click.option("--agent", required=True, type=AGENTS, help="The coding agent to run.")
@click.option("--tier", type=TIERS, help="Model tier [balanced].")
@click.option("--model", help="An exact model instead of a tier.")
@click.option("--repo", "repo_url", metavar="URL", help="Git repository to work in.")
@click.option("--ref", metavar="REF", help="Branch, tag or commit of --repo.")
@click.option("--workspace", metavar="NAME", help="Your persistent workspace to work in (made on first use).")
@click.option("--push", "push_branch", metavar="BRANCH", help="Commit the changes and push them to BRANCH.")
@click.option("--timeout", "timeout_s", type=click.IntRange(min=1), metavar="SECONDS", help="Time limit.")
@click.option("--env", multiple=True, callback=parse_pairs, metavar="NAME=VALUE", help="Non-secret variable.")
@click.option("--label", multiple=True, callback=parse_pairs, metavar="KEY=VALUE", help="Label to filter by.")
@click.option(
    "--failover-model", "failover_models", multiple=True, metavar="MODEL",
    help="While its provider account is out of quota, run on MODEL instead (repeat: tried in order).",
)  # fmt: skip
@click.option(
    "--failover-tier", "failover_tiers", multiple=True, type=TIERS,
    help="Then on that tier's model of another provider (repeat: tried in order).",
)  # fmt: skip
@click.option(
    "--failover-account", is_flag=True,
    help="While your own key for its provider is out of quota, run on the server's key first.",
)  # fmt: skip
@click.option("--idempotency-key", metavar="KEY", help="Retrying with the same key cannot run it twice.")
@click.option("--wait", is_flag=True, help="Wait for the end; exit 0 only if it succeeded.")
@click.option("--follow", is_flag=True, help="Print what it does as it happens (implies --wait).")
@click.option(
    "--json", "as_json", is_flag=True,
    help="Print the dispatch as JSON; with --follow, each event as a line of JSON instead.",
)  # fmt: skip
@click.argument("task")
def dispatch(
    task: str, agent: str, tier: str | None, model: str | None, repo_url: str | None, ref: str | None,
    workspace: str | None, push_branch: str | None, timeout_s: int | None, env: dict[str, str],
    label: dict[str, str], failover_models: tuple[str, ...], failover_tiers: tuple[str, ...],
    failover_account: bool, idempotency_key: str | None, wait: bool, follow: bool, as_json: bool,
) -> None:  # fmt: skip
    """Run TASK with an agent. Prints the dispatch id; with --wait or --follow, how it ended.

    With --wait or --follow the exit code says how it ended: 0 succeeded, 4 failed, timed out or was
    cancelled. --follow --json prints the events as `outpost logs --json` does (the dispatch's own JSON
    is then left to `outpost status ID --json`; its id is on stderr).
    """
    request = _dispatch_request(
        task=task, agent=agent, tier=tier, model=model, repo_url=repo_url, ref=ref, workspace=workspace,
        push_branch=push_branch, timeout_s=timeout_s, env=env, labels=label,
        failover=_failover(failover_models, failover_tiers, failover_account),
    )  # fmt: skip
    with ApiClient.from_environment() as api:
        created = api.submit_dispatch(request, idempotency_key)
        if not (wait or follow):
            _show_submitted(created, as_json)
            return
        ended = _watch(api, created, follow=follow, as_json=as_json)
    _show_ended(ended, as_json and not follow, with_result=not follow)


def _dispatch_request(
    *, task: str, agent: str, tier: str | None, model: str | None, repo_url: str | None, ref: str | None,
    workspace: str | None, push_branch: str | None, timeout_s: int | None, env: dict[str, str],
    labels: dict[str, str], failover: dict[str, object] | None,
) -> DispatchCreate:  # fmt: skip
    """Raises UsageError for options that do not go together, InvalidInput for values the API refuses."""
    if tier is not None and model is not None:
        raise click.UsageError("give --tier or --model, not both")
    for option, value in (("--ref", ref), ("--push", push_branch)):
        if value is not None and repo_url is None:
            raise click.UsageError(f"{option} needs --repo")
    # Nested values go in as dicts, so that a refused one is named in full (`workspace.name`).
    return build_request(
        DispatchCreate, agent=agent, task=task, tier=tier, model=model,
        repo={"url": repo_url, "ref": ref} if repo_url is not None else None,
        workspace={"mode": "persistent", "name": workspace} if workspace is not None else {},
        push={"branch": push_branch} if push_branch is not None else None,
        timeout_s=timeout_s, env=env, labels=labels, failover=failover,
    )  # fmt: skip


def _failover(models: tuple[str, ...], tiers: tuple[str, ...], accounts: bool) -> dict[str, object] | None:
    """The request's `failover` from the --failover-* options; None when none was given."""
    if not (models or tiers or accounts):
        return None
    return {"models": list(models), "tiers": list(tiers), "accounts": accounts}


def _show_submitted(created: DispatchRead, as_json: bool) -> None:
    if as_json:
        display.print_json(created)
        return
    click.echo(created.id)
    display.note(f"{created.status}; watch it with `outpost logs {created.id} --follow`")


def _watch(api: ApiClient, created: DispatchRead, *, follow: bool, as_json: bool) -> DispatchRead:
    """Stay until the dispatch ends (printing its events with `follow`) and return it as it ended."""
    try:
        if follow:
            display.note(f"dispatch {created.id}")
            follow_events(api, created.id, 0, _event_sink(created.agent, as_json))
            return api.get_dispatch(created.id)
        return wait_until_ended(api, created, display.console(stderr=True))
    except KeyboardInterrupt:
        # Ctrl-C ends the watching, not the dispatch: say so, or users believe they cancelled it.
        display.note(
            f"stopped watching; dispatch {created.id} goes on (`outpost cancel {created.id}` stops it)"
        )
        raise


def _show_ended(ended: DispatchRead, as_json: bool, *, with_result: bool) -> None:
    """Print how the dispatch ended; raises DispatchUnsuccessful (its own exit code) unless it succeeded."""
    if as_json:
        display.print_json(ended)
    elif with_result and ended.result:
        click.echo(ended.result)
    raise_unless_succeeded(ended)
    display.note(f"{display.outcome(ended)} in {display.duration(ended) or '0 s'}")


@click.command()
@click.argument("dispatch_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print the dispatch as JSON.")
def status(dispatch_id: str, as_json: bool) -> None:
    """Show one dispatch: its status, timings, exit code, failure and result."""
    with ApiClient.from_environment() as api:
        found = api.get_dispatch(dispatch_id)
    if as_json:
        display.print_json(found)
    else:
        display.show(display.dispatch_details(found))


@click.command("list")
@click.option("--status", "status_", type=STATUSES, help="Only dispatches in this status.")
@click.option("--agent", type=AGENTS, help="Only dispatches of this agent.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 200), help="Page size.")
@click.option("--cursor", help="Where the page starts: the cursor the previous page printed.")
@click.option("--json", "as_json", is_flag=True, help="Print the page as JSON.")
def list_dispatches(
    status_: str | None, agent: str | None, limit: int, cursor: str | None, as_json: bool
) -> None:
    """List your dispatches, newest first, one page at a time."""
    with ApiClient.from_environment() as api:
        page = api.list_dispatches(status=status_, agent=agent, limit=limit, cursor=cursor)
    if as_json:
        display.print_json(page)
        return
    display.show(display.dispatch_table(page.items))
    if page.next_cursor is not None:
        click.echo(f"next page: outpost list --cursor {page.next_cursor}")


@click.command()
@click.argument("dispatch_id", metavar="ID")
@click.option("--follow", is_flag=True, help="Keep printing new events until the dispatch ends.")
@click.option(
    "--after",
    "after_seq",
    default=0,
    type=click.IntRange(min=0),
    metavar="SEQ",
    help="Start after event SEQ.",
)
@click.option("--json", "as_json", is_flag=True, help="Print each event as a line of JSON.")
def logs(dispatch_id: str, follow: bool, after_seq: int, as_json: bool) -> None:
    """Print a dispatch's events: its output (stdout and stderr as the agent wrote them), what the agent
    did, usage so far, status changes and artifacts. With --json, each event as a line of JSON with the
    fields `seq`, `created_at`, `kind` and `data`."""
    with ApiClient.from_environment() as api:
        found = api.get_dispatch(dispatch_id)
        sink = _event_sink(found.agent, as_json)
        if not follow:
            page_events(api, found.id, after_seq, sink)
            return
        try:
            follow_events(api, found.id, after_seq, sink)
        except InvalidInput as exc:
            # Past the last event: nothing is left of a dispatch that ended; one still running has not
            # written that event yet, and may never write it.
            if not api.get_dispatch(found.id).status.is_terminal:
                raise InvalidInput(f"--after {after_seq}: {exc.detail}") from exc


def _event_sink(agent: str, as_json: bool) -> EventSink:
    return JsonEventPrinter() if as_json else EventPrinter(agent)


@click.command()
@click.argument("dispatch_id", metavar="ID")
def cancel(dispatch_id: str) -> None:
    """Cancel a queued or running dispatch (one that has ended stays as it is)."""
    with ApiClient.from_environment() as api:
        cancelled = api.cancel_dispatch(dispatch_id)
    click.echo(f"{cancelled.id} {cancelled.status}")
