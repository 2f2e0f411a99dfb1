"""The optional push after a run: a succeeded run's captured changes go to the dispatch's branch."""

from __future__ import annotations

from dataclasses import replace

from outpost.db.repositories.dispatches import DispatchRow
from outpost.domain.dispatch import DispatchStatus, FailureReason
from outpost.errors import OutpostError
from outpost.services.runs import Outcome
from outpost.worker.run_results import KeptResults
from outpost.worker.run_workspace import PreparedWorkspace, RunWorkspaces


async def push_step(
    workspaces: RunWorkspaces,
    row: DispatchRow,
    prepared: PreparedWorkspace | None,
    kept: KeptResults,
    outcome: Outcome,
) -> tuple[Outcome, dict[str, object]]:
    """The outcome (failed when the push fails: the user asked for the branch and did not get it) and
    what happened, for the artifacts event. Runs that did not succeed are not pushed."""
    branch = row.push_branch
    if outcome.status != DispatchStatus.SUCCEEDED or prepared is None:
        return outcome, {"branch": branch, "pushed": False, "detail": "not pushed: the run did not succeed"}
    if kept.changes is None or kept.changes.tree is None:
        return _failed(outcome, branch, "not pushed: the changes could not be captured")
    try:
        pushed = await workspaces.push(row, prepared, kept.changes.tree)
    except OutpostError as exc:
        return _failed(outcome, branch, f"the push to {branch} failed: {exc.detail}")
    return outcome, {
        "branch": branch,
        "pushed": pushed.pushed,
        "commit": pushed.commit,
        "detail": pushed.detail,
    }


def _failed(outcome: Outcome, branch: str | None, detail: str) -> tuple[Outcome, dict[str, object]]:
    failed = replace(
        outcome, status=DispatchStatus.FAILED, reason=FailureReason.WORKSPACE_ERROR, detail=detail
    )
    return failed, {"branch": branch, "pushed": False, "detail": detail}
