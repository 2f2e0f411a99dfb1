"""The MCP tools: their arguments, what each does, and what it returns.

A tool validates its arguments with the REST API's own request models (so the enums, patterns and bounds
are the API's), calls one backend operation, and returns the REST API's JSON for it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

from mcp_types import ToolAnnotations
from pydantic import BaseModel, ConfigDict, Field

from outpost.domain.dispatch import AgentName, DispatchStatus
from outpost.errors import OutpostError
from outpost.mcp.base import OutpostBackend
from outpost.mcp.problems import ToolFailed, problem_of_error
from outpost.mcp.waiting import ReportProgress, wait_for_end
from outpost.schemas.artifacts import ArtifactList, WorkspacePage
from outpost.schemas.dispatches import DispatchCreate, DispatchPage, DispatchRead, EventPage
from outpost.schemas.text import StorableText

MAX_WAIT_S = 600
ArgumentsT = TypeVar("ArgumentsT", bound=BaseModel)

DispatchId = Annotated[
    str, Field(min_length=1, max_length=64, description="The dispatch's id, as outpost_dispatch returned it.")
]


class Arguments(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NoArguments(Arguments):
    pass


class DispatchArguments(DispatchCreate):
    """A dispatch as `POST /v1/dispatches` takes it, and how long to wait for it to end."""

    wait_s: Annotated[float, Field(ge=0, le=MAX_WAIT_S)] = Field(
        default=0,
        description="Wait up to this many seconds for the dispatch to end, with progress notifications; "
        "0 returns it queued. Past the wait, it comes back as it is then (not an error).",
    )
    idempotency_key: Annotated[StorableText, Field(min_length=1, max_length=255)] | None = Field(
        default=None, description="Retrying with the same key returns the first dispatch, not a new one."
    )

    def request(self) -> DispatchCreate:
        return DispatchCreate.model_validate(self.model_dump(exclude={"wait_s", "idempotency_key"}))


class DispatchRef(Arguments):
    dispatch_id: DispatchId


class DispatchQuery(Arguments):
    status: DispatchStatus | None = None
    agent: AgentName | None = None
    limit: Annotated[int, Field(ge=1, le=200)] = 50
    cursor: Annotated[str, Field(max_length=64, description="A page's `next_cursor`.")] | None = None


class LogsQuery(Arguments):
    dispatch_id: DispatchId
    after: Annotated[int, Field(ge=0, le=2**62, description="Events after this sequence number.")] = 0
    limit: Annotated[int, Field(ge=1, le=1000)] = 200


class WorkspaceRef(Arguments):
    workspace_id: Annotated[str, Field(min_length=1, max_length=64)]


class WorkspaceDeleted(BaseModel):
    workspace_id: str
    deleted: bool = True


class Readiness(BaseModel):
    """`GET /health/ready`'s report: `checks` names each failing part; also the sandbox, agents, storage."""

    model_config = ConfigDict(extra="allow")
    status: str
    checks: dict[str, str]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """What a running tool may use: the backend (as the caller), and progress notifications."""

    backend: OutpostBackend
    report_progress: ReportProgress


@dataclass(frozen=True, slots=True)
class Tool(Generic[ArgumentsT]):
    name: str
    description: str
    arguments: type[ArgumentsT]
    result: type[BaseModel]
    run: Callable[[ToolCall, ArgumentsT], Awaitable[BaseModel]]
    annotations: ToolAnnotations


async def dispatch(call: ToolCall, args: DispatchArguments) -> DispatchRead:
    created = await call.backend.submit_dispatch(args.request(), args.idempotency_key)
    if args.wait_s == 0:
        return created
    try:
        return await wait_for_end(call.backend, created, args.wait_s, call.report_progress)
    except OutpostError as exc:
        # The dispatch exists: the caller must learn its id even though the wait failed.
        problem = problem_of_error(exc)
        detail = f"dispatch {created.id} was submitted, but waiting for it failed: {problem['detail']}"
        raise ToolFailed({**problem, "detail": detail, "dispatch_id": created.id}) from exc


async def status(call: ToolCall, args: DispatchRef) -> DispatchRead:
    return await call.backend.get_dispatch(args.dispatch_id)


async def cancel(call: ToolCall, args: DispatchRef) -> DispatchRead:
    return await call.backend.cancel_dispatch(args.dispatch_id)


async def health(call: ToolCall, _: NoArguments) -> Readiness:
    return Readiness.model_validate(await call.backend.readiness())


async def list_workspaces(call: ToolCall, _: NoArguments) -> WorkspacePage:
    return await call.backend.list_workspaces()


async def delete_workspace(call: ToolCall, args: WorkspaceRef) -> WorkspaceDeleted:
    await call.backend.delete_workspace(args.workspace_id)
    return WorkspaceDeleted(workspace_id=args.workspace_id)


async def get_artifacts(call: ToolCall, args: DispatchRef) -> ArtifactList:
    return await call.backend.list_artifacts(args.dispatch_id)


async def list_dispatches(call: ToolCall, args: DispatchQuery) -> DispatchPage:
    return await call.backend.list_dispatches(
        status=args.status, agent=args.agent, limit=args.limit, cursor=args.cursor
    )


async def logs(call: ToolCall, args: LogsQuery) -> EventPage:
    return await call.backend.list_events(args.dispatch_id, args.after, args.limit)


READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)
TOOLS: tuple[Tool[Any], ...] = (
    Tool(
        "outpost_dispatch",
        "Run a coding task with an AI coding agent (claude, codex, gemini, aider, grok) or a shell command "
        "(agent `shell`) in a sandbox, optionally in a git repository (`repo`) or a persistent workspace. "
        "Returns the dispatch; with `wait_s`, waits for its end and reports progress meanwhile.",
        DispatchArguments, DispatchRead, dispatch,
        ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=True),
    ),
    Tool(
        "outpost_status",
        "A dispatch: its status, result (the agent's final message), failure, usage, cost and artifacts.",
        DispatchRef, DispatchRead, status, READ_ONLY,
    ),
    Tool(
        "outpost_cancel",
        "Cancel a queued or running dispatch; its partial output is kept. Cancelling one that has ended "
        "returns it unchanged.",
        DispatchRef, DispatchRead, cancel,
        ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True),
    ),
    Tool(
        "outpost_health",
        "Whether the Outpost server is ready: its store, worker, sandbox, agents and storage.",
        NoArguments, Readiness, health, READ_ONLY,
    ),
    Tool(
        "outpost_list_workspaces",
        "Your persistent workspaces, their sizes and which dispatch uses each, and your storage quota.",
        NoArguments, WorkspacePage, list_workspaces, READ_ONLY,
    ),
    Tool(
        "outpost_delete_workspace",
        "Delete one of your persistent workspaces (refused while a dispatch uses it).",
        WorkspaceRef, WorkspaceDeleted, delete_workspace,
        ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False),
    ),
    Tool(
        "outpost_get_artifacts",
        "What a dispatch left behind (the patch of its changes, changed files, final message, events) with "
        "signed download links that need no key and expire.",
        DispatchRef, ArtifactList, get_artifacts, READ_ONLY,
    ),
    Tool(
        "outpost_list_dispatches",
        "Your dispatches, newest first, optionally by status or agent; pass `next_cursor` for the next page.",
        DispatchQuery, DispatchPage, list_dispatches, READ_ONLY,
    ),
    Tool(
        "outpost_logs",
        "A dispatch's events in order: output lines, status changes, notices. Pass `next_after` as `after` "
        "for the next page.",
        LogsQuery, EventPage, logs, READ_ONLY,
    ),
)  # fmt: skip
