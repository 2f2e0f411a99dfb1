"""The dispatch lifecycle: states, failure reasons and the transitions allowed between states.

    queued → provisioning → running → succeeded | failed | timed_out | cancelled

A dispatch whose worker was lost may go back to `queued` for another attempt. Every terminal state is final:
exactly one terminal transition happens per dispatch (the store enforces it with a version column).
"""

from __future__ import annotations

from enum import StrEnum


class DispatchStatus(StrEnum):
    QUEUED = "queued"
    PROVISIONING = "provisioning"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES

    @property
    def is_active(self) -> bool:
        """A worker holds it (provisioning or running)."""
        return self in ACTIVE_STATUSES


TERMINAL_STATUSES = frozenset(
    {DispatchStatus.SUCCEEDED, DispatchStatus.FAILED, DispatchStatus.TIMED_OUT, DispatchStatus.CANCELLED}
)
ACTIVE_STATUSES = frozenset({DispatchStatus.PROVISIONING, DispatchStatus.RUNNING})

_ENDINGS = {DispatchStatus.FAILED, DispatchStatus.TIMED_OUT, DispatchStatus.CANCELLED}
_ALLOWED: dict[DispatchStatus, frozenset[DispatchStatus]] = {
    DispatchStatus.QUEUED: frozenset(
        {DispatchStatus.PROVISIONING, DispatchStatus.CANCELLED, DispatchStatus.FAILED}
    ),
    DispatchStatus.PROVISIONING: frozenset({DispatchStatus.RUNNING, DispatchStatus.QUEUED, *_ENDINGS}),
    DispatchStatus.RUNNING: frozenset({DispatchStatus.SUCCEEDED, DispatchStatus.QUEUED, *_ENDINGS}),
}


class FailureReason(StrEnum):
    """Why a dispatch did not succeed (machine-readable; the detail says more). `failed` always has one,
    `timed_out` has `timed_out`, `cancelled` has none."""

    AGENT_ERROR = "agent_error"
    AUTH = "auth"
    QUOTA = "quota"
    PROVIDER_ERROR = "provider_error"
    MAX_TURNS = "max_turns"
    BUDGET_EXCEEDED = "budget_exceeded"
    OOM = "oom"
    PIDS = "pids"
    DISK_FULL = "disk_full"
    SANDBOX_ERROR = "sandbox_error"
    WORKSPACE_ERROR = "workspace_error"
    """The workspace could not be prepared: repository unreachable or refused, ref missing, credential
    refused, tree too large for the workspace."""
    WORKER_LOST = "worker_lost"
    TIMED_OUT = "timed_out"
    INTERNAL = "internal"


class Tier(StrEnum):
    FLAGSHIP = "flagship"
    BALANCED = "balanced"
    FAST = "fast"


class AgentName(StrEnum):
    CLAUDE = "claude"
    CODEX = "codex"
    GEMINI = "gemini"
    AIDER = "aider"
    GROK = "grok"
    SHELL = "shell"


def can_transition(source: DispatchStatus, target: DispatchStatus) -> bool:
    """True when the lifecycle allows moving from `source` to `target`."""
    return target in _ALLOWED.get(source, frozenset())
