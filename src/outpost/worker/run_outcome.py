"""How a run's attempt ended, in the dispatch's terms: its status, failure reason and detail, and what
the gateway metered."""

from __future__ import annotations

from dataclasses import replace

from outpost.domain.dispatch import DispatchStatus, FailureReason
from outpost.sandbox.base import LimitName
from outpost.services.runs import Outcome
from outpost.worker.agent_launch import Launch
from outpost.worker.run_meter import RunMeter
from outpost.worker.run_report import RunReport

LIMIT_FAILURES = {
    "oom": (FailureReason.OOM, "the run reached its memory limit and was killed"),
    "pids": (FailureReason.PIDS, "the run reached its process limit"),
    "disk_full": (FailureReason.DISK_FULL, "the run filled its workspace or scratch space"),
}
ERROR_KIND_FAILURES = {
    "auth": FailureReason.AUTH,
    "quota": FailureReason.QUOTA,
    "provider_error": FailureReason.PROVIDER_ERROR,
    "max_turns": FailureReason.MAX_TURNS,
}


def exit_outcome(
    exit_code: int, report: RunReport, exceeded: LimitName | None, meter: RunMeter | None
) -> Outcome:
    if exit_code == 0 and not report.failed:
        return Outcome(DispatchStatus.SUCCEEDED, exit_code=0, result=report.result())
    reason, detail = _failure(exit_code, report, exceeded, meter)
    return Outcome(
        DispatchStatus.FAILED, exit_code=exit_code, result=report.result(), reason=reason, detail=detail
    )


def _failure(
    exit_code: int, report: RunReport, exceeded: LimitName | None, meter: RunMeter | None
) -> tuple[FailureReason, str]:
    """The most precise reason: a limit the sandbox saw, then what the provider answered (the gateway saw
    it first-hand), then what the agent said, else a plain agent error."""
    ending = f"killed by signal {-exit_code}" if exit_code < 0 else f"exited with status {exit_code}"
    if exceeded is not None:
        reason, limit_detail = LIMIT_FAILURES[exceeded]
        return reason, f"{limit_detail} ({ending})"
    failure = meter.last_failure if meter is not None else None
    if failure is not None:
        return ERROR_KIND_FAILURES[failure.failure.kind], f"{failure.detail()} ({ending})"
    if report.error_kind is not None:
        return ERROR_KIND_FAILURES[report.error_kind], f"{report.error_message} ({ending})"
    if report.failed:
        return FailureReason.AGENT_ERROR, f"the agent reported a failure ({ending})"
    return FailureReason.AGENT_ERROR, ending


def with_metering(outcome: Outcome, launch: Launch) -> Outcome:
    """The gateway's usage and cost (authoritative), and the CLI's own cost report as a cross-check."""
    meter, final = launch.meter, launch.report.final
    cli_cost = final.cost_usd if final is not None else None
    return replace(
        outcome,
        usage=meter.usage if meter is not None else None,
        cost_micro_usd=meter.cost_micro_usd if meter is not None else 0,
        cli_cost_micro_usd=round(cli_cost * 1_000_000) if cli_cost is not None else None,
    )


def stopped_outcome(timeout_s: float, aborted: bool, report: RunReport, meter: RunMeter | None) -> Outcome:
    """A run stopped before its main process exited: cancelled, given up on by the gateway (a retry could
    not succeed), or else out of time. (A budget refusal stops it too; its caller gives that reason.)"""
    if aborted:
        return Outcome(DispatchStatus.CANCELLED, result=report.result())
    failure = meter.last_failure if meter is not None else None
    if failure is not None and meter is not None and meter.gave_up.is_set():
        detail = f"{failure.detail()} (the run was stopped: retrying could not succeed)"
        reason = ERROR_KIND_FAILURES[failure.failure.kind]
        return Outcome(DispatchStatus.FAILED, result=report.result(), reason=reason, detail=detail)
    return Outcome(
        DispatchStatus.TIMED_OUT,
        result=report.result(),
        reason=FailureReason.TIMED_OUT,
        detail=f"killed after its {timeout_s} s limit",
    )
