"""How the CLI shows things: results, tables and logs on stdout; progress, notes and agents' stderr on stderr.

Text from the server or from agents is never read as Rich markup: a log line or a task may contain `[red]`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

import click
from pydantic import BaseModel
from rich import box
from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

from outpost.schemas.artifacts import ArtifactRead, WorkspaceRead
from outpost.schemas.dispatches import DispatchRead
from outpost.schemas.keys import KeyRead
from outpost.schemas.providers import ProviderRead

# Off a terminal Rich would wrap at 80 columns and split ids across lines; pipes get whole rows instead.
PIPE_WIDTH = 200
TASK_PREVIEW_CHARS = 60
SHA256_PREFIX_CHARS = 12
BYTE_UNITS = ("KiB", "MiB", "GiB", "TiB")


def console(*, stderr: bool = False) -> Console:
    plain = Console(stderr=stderr, highlight=False)
    return plain if plain.is_terminal else Console(stderr=stderr, highlight=False, width=PIPE_WIDTH)


def show(renderable: RenderableType) -> None:
    console().print(renderable)


def note(message: str) -> None:
    """One line for the person at the terminal (stderr), kept out of what scripts read from stdout."""
    click.echo(message, err=True)


def print_json(model: BaseModel) -> None:
    click.echo(model.model_dump_json(indent=2))


def when(moment: datetime | None) -> str:
    """A timestamp in the local time zone, to the second; empty for None."""
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S") if moment else ""


def size(size_bytes: int) -> str:
    """Bytes for people: `512 B`, `1.5 KiB`, `2.0 GiB`."""
    if size_bytes < 1024:
        return f"{size_bytes} B"
    value = float(size_bytes)
    for unit in BYTE_UNITS:
        value /= 1024
        if value < 1024 or unit == BYTE_UNITS[-1]:
            break
    return f"{value:.1f} {unit}"


def duration(dispatch: DispatchRead) -> str:
    """Run time: from start to finish, or to now while it runs; empty before it starts."""
    if dispatch.started_at is None:
        return ""
    end = dispatch.finished_at or datetime.now(UTC)
    return f"{(end - dispatch.started_at).total_seconds():.1f} s"


def outcome(dispatch: DispatchRead) -> str:
    """One line saying how a dispatch ended (or where it is), with the reason when it failed."""
    line = f"dispatch {dispatch.id} {dispatch.status}"
    if dispatch.failure is not None:
        return f"{line}: {_failure(dispatch)}"
    return line


def _failure(dispatch: DispatchRead) -> str:
    if dispatch.failure is None:
        return ""
    reason, detail = dispatch.failure.reason, dispatch.failure.detail
    return f"{reason}: {detail}" if detail else str(reason)


def _table(headers: Iterable[str], rows: Iterable[Sequence[str]]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for header in headers:
        table.add_column(header, no_wrap=True)
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))
    return table


def dispatch_table(dispatches: Sequence[DispatchRead]) -> Table:
    rows = [
        (d.id, d.status, d.agent, when(d.created_at), duration(d), _exit(d), _preview(d.task))
        for d in dispatches
    ]
    return _table(("ID", "STATUS", "AGENT", "CREATED", "RAN", "EXIT", "TASK"), rows)


def key_table(keys: Sequence[KeyRead]) -> Table:
    rows = [
        (k.id, k.prefix, k.name, "yes" if k.admin else "", when(k.created_at), when(k.expires_at), _state(k))
        for k in keys
    ]
    return _table(("ID", "PREFIX", "NAME", "ADMIN", "CREATED", "EXPIRES", "STATE"), rows)


def provider_table(providers: Sequence[ProviderRead]) -> Table:
    rows = [
        (
            p.name, p.base_url or "", p.base_url_source, p.api_key_source or "none",
            str(p.api_key_version or ""), when(p.updated_at),
        )
        for p in providers
    ]  # fmt: skip
    return _table(("NAME", "BASE URL", "URL FROM", "KEY FROM", "KEY VERSION", "UPDATED"), rows)


def artifact_table(artifacts: Sequence[ArtifactRead]) -> Table:
    rows = [
        (a.name, size(a.size_bytes), a.sha256[:SHA256_PREFIX_CHARS], when(a.expires_at)) for a in artifacts
    ]
    return _table(("NAME", "SIZE", "SHA256", "EXPIRES"), rows)


def workspace_table(workspaces: Sequence[WorkspaceRead]) -> Table:
    rows = [
        (
            w.id, w.name, w.repo_url or "", size(w.size_bytes), w.in_use_by or "", when(w.created_at),
            when(w.last_used_at),
        )
        for w in workspaces
    ]  # fmt: skip
    return _table(("ID", "NAME", "REPO", "SIZE", "IN USE BY", "CREATED", "LAST USED"), rows)


def dispatch_details(dispatch: DispatchRead) -> Table:
    """Label/value lines of every field that has a value."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    for label, value in _detail_rows(dispatch):
        if value:
            grid.add_row(Text(label), Text(value))
    return grid


def _detail_rows(d: DispatchRead) -> list[tuple[str, str]]:
    usage = d.usage
    return [
        ("id", d.id), ("status", d.status), ("agent", d.agent), ("model", d.model or f"tier {d.tier}"),
        ("key", "the server's (failed over from yours)" if d.failover_account == "server" else ""),
        ("waiting", d.queue_reason or ""),
        ("attempt", str(d.attempt)), ("created", when(d.created_at)), ("started", when(d.started_at)),
        ("finished", when(d.finished_at)), ("ran", duration(d)), ("exit code", _exit(d)),
        ("failure", _failure(d)),
        ("tokens", f"{usage.input_tokens} in, {usage.output_tokens} out" if usage.input_tokens else ""),
        ("cost", f"${d.cost_usd:.4f}" if d.cost_usd else ""),
        ("labels", ", ".join(f"{name}={value}" for name, value in d.labels.items())),
        ("repo", d.repo.url if d.repo else ""), ("ref", (d.repo.ref or "") if d.repo else ""),
        ("base commit", d.base_commit or ""), ("workspace", d.workspace.name or ""),
        ("push to", d.push.branch if d.push else ""),
        ("artifacts", _artifact_lines(d.artifacts)),
        ("task", d.task), ("result", d.result or ""),
    ]  # fmt: skip


def _artifact_lines(artifacts: Sequence[ArtifactRead]) -> str:
    width = max((len(a.name) for a in artifacts), default=0)
    return "\n".join(f"{a.name:<{width}}  {size(a.size_bytes)}" for a in artifacts)


def _exit(dispatch: DispatchRead) -> str:
    return "" if dispatch.exit_code is None else str(dispatch.exit_code)


def _preview(task: str) -> str:
    line = " ".join(task.split())
    return line if len(line) <= TASK_PREVIEW_CHARS else f"{line[: TASK_PREVIEW_CHARS - 1]}…"


def _state(key: KeyRead) -> str:
    if key.revoked_at is not None:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= datetime.now(UTC):
        return "expired"
    return "active"
