"""Runs one dispatch attempt: workspace, sandbox, output, timeout and abort, final state."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any

from outpost.agents.events import AgentEvent, Text
from outpost.agents.registry import AgentRegistry
from outpost.db.repositories.dispatches import DispatchRow
from outpost.domain.dispatch import DispatchStatus, FailureReason
from outpost.errors import InvalidInput, SandboxError
from outpost.sandbox.base import LimitName, RequestedLimits, Sandbox, SandboxRun
from outpost.secrets.box import SecretUnreadable
from outpost.services.runs import Outcome, RunService
from outpost.settings import LimitSettings
from outpost.worker.agent_launch import AgentRuntime, Launch, prepare_launch
from outpost.worker.line_joiner import LineJoiner
from outpost.worker.recorder import OutputRecorder
from outpost.worker.run_meter import RunMeter
from outpost.worker.run_report import RunReport, event_data

log = logging.getLogger(__name__)
# After the main process exits, how long stray children may keep its output pipes open.
OUTPUT_DRAIN_S = 0.5


class DispatchExecutor:
    def __init__(
        self,
        *,
        runs: RunService,
        sandbox: Sandbox,
        agents: AgentRegistry,
        runtime: AgentRuntime,
        limits: LimitSettings,
        flush_s: float,
    ) -> None:
        self._runs = runs
        self._sandbox = sandbox
        self._agents = agents
        self._runtime = runtime
        self._limits = limits
        self._flush_s = flush_s

    async def execute(self, row: DispatchRow, abort: asyncio.Event) -> None:
        """Run a claimed (`provisioning`) dispatch to a terminal state. Never raises."""
        runs: list[SandboxRun] = []
        workdirs: list[Path] = []
        try:
            outcome = await self._attempt(row, workdirs, abort, runs)
            if outcome is not None:
                await self._runs.finish(row.id, outcome)
        except Exception:
            log.exception("dispatch %s failed inside the worker", row.id)
            internal = Outcome(
                DispatchStatus.FAILED, reason=FailureReason.INTERNAL, detail="internal worker error"
            )
            await self._runs.finish(row.id, internal)
        finally:
            # After the outcome is recorded: the sweep for stray processes takes milliseconds, and the
            # outcome does not depend on it (the main process has ended, or was killed already).
            kills = [run.kill() for run in runs]
            await _to_the_end([*kills, *(self._sandbox.remove_workspace(w) for w in workdirs)])

    async def _attempt(
        self, row: DispatchRow, workdirs: list[Path], abort: asyncio.Event, started: list[SandboxRun]
    ) -> Outcome | None:
        """Run the attempt. The workspace and the sandbox run, once made, are appended to `workdirs` and
        `started` for the caller to remove and kill."""
        limits = _requested_limits(row.limits)
        try:
            workdir = await self._sandbox.create_workspace(row.id, limits)
        except SandboxError as exc:
            return Outcome(DispatchStatus.FAILED, reason=FailureReason.SANDBOX_ERROR, detail=exc.detail)
        workdirs.append(workdir)
        running = await self._runs.mark_running(row)
        if running is None:
            return None  # cancelled before it started
        recorder = OutputRecorder(self._runs, row.id, self._flush_s, self._limits.max_log_bytes)
        try:
            launch = await self._prepare(row, workdir, limits, recorder)
            run = await self._sandbox.start(launch.spec)
        except (SandboxError, InvalidInput) as exc:
            await recorder.close()
            return Outcome(DispatchStatus.FAILED, reason=FailureReason.SANDBOX_ERROR, detail=exc.detail)
        except SecretUnreadable as exc:
            await recorder.close()
            return Outcome(DispatchStatus.FAILED, reason=FailureReason.AUTH, detail=exc.detail)
        started.append(run)
        try:
            return await self._supervise(run, row, abort, recorder, launch)
        finally:
            launch.revoke(self._runtime)
            await recorder.close()

    async def _prepare(
        self, row: DispatchRow, workdir: Path, limits: RequestedLimits, recorder: OutputRecorder
    ) -> Launch:
        tenant_egress = await self._runs.tenant_egress_allow(row.tenant_id)
        return await prepare_launch(
            self._runtime, self._sandbox, self._agents.get(row.agent), row, workdir, limits,
            recorder.event, (*tenant_egress, *(row.egress_allow or ())),
        )  # fmt: skip

    async def _supervise(
        self,
        run: SandboxRun,
        row: DispatchRow,
        abort: asyncio.Event,
        recorder: OutputRecorder,
        launch: Launch,
    ) -> Outcome:
        report = launch.report
        output = asyncio.create_task(_record_output(run, recorder, report))
        exited = asyncio.create_task(run.wait())
        aborted = asyncio.create_task(abort.wait())
        gave_up = asyncio.create_task(launch.meter.gave_up.wait()) if launch.meter else aborted
        try:
            await asyncio.wait(
                {exited, aborted, gave_up}, timeout=row.timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            aborted.cancel()
            gave_up.cancel()
        # Decide what ended the run before killing it: the kill makes `exited` complete too.
        exited_first = exited.done()
        if not exited_first:
            await run.kill()
            exited.cancel()
        await _drain(output, run)
        _record_agent_events(recorder, report.finish())
        if exited_first:
            code = exited.result()
            # Only a failed run can have failed on a limit; a success skips the cgroup and disk reads.
            exceeded = await run.limit_exceeded() if code != 0 else None
            return _with_metering(_exit_outcome(code, report, exceeded, launch.meter), launch)
        if abort.is_set():
            return _with_metering(Outcome(DispatchStatus.CANCELLED, result=report.result()), launch)
        failure = launch.meter.last_failure if launch.meter is not None else None
        if failure is not None and launch.meter is not None and launch.meter.gave_up.is_set():
            detail = f"{failure.detail()} (the run was stopped: retrying could not succeed)"
            reason = ERROR_KIND_FAILURES[failure.failure.kind]
            stopped = Outcome(DispatchStatus.FAILED, result=report.result(), reason=reason, detail=detail)
            return _with_metering(stopped, launch)
        timed_out = Outcome(
            DispatchStatus.TIMED_OUT,
            result=report.result(),
            reason=FailureReason.TIMED_OUT,
            detail=f"killed after its {row.timeout_s} s limit",
        )
        return _with_metering(timed_out, launch)


def _requested_limits(stored: dict[str, float] | None) -> RequestedLimits:
    """The dispatch's own limits, in the sandbox's units (checked against the server's at submit)."""
    asked = stored or {}
    memory_mb, pids, cpu_cores = asked.get("memory_mb"), asked.get("pids"), asked.get("cpu_cores")
    disk_mb = asked.get("disk_mb")
    return RequestedLimits(
        memory_bytes=int(memory_mb) * 2**20 if memory_mb else None,
        pids_max=int(pids) if pids else None,
        cpu_cores=float(cpu_cores) if cpu_cores else None,
        disk_bytes=int(disk_mb) * 2**20 if disk_mb else None,
    )


async def _to_the_end(cleanups: list[Coroutine[Any, Any, None]]) -> None:
    """Run cleanups (kills, then workspace removals) in order; a cancellation (the worker stopping) waits
    for all of them before it goes on, so that no process, cgroup, proxy listener or mount is left."""

    async def in_order() -> None:
        for cleanup in cleanups:
            await cleanup

    task = asyncio.ensure_future(in_order())
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise


async def _record_output(run: SandboxRun, recorder: OutputRecorder, report: RunReport) -> None:
    """The log keeps the lines as the sandbox cut them; the parser reads them whole again."""
    joiner = LineJoiner()
    async for batch in run.output():
        recorder.add(batch)
        for text in joiner.lines(batch):
            _record_agent_events(recorder, report.feed(batch.stream, text), text)
    for stream, text in joiner.finish():
        _record_agent_events(recorder, report.feed(stream, text), text)


def _record_agent_events(recorder: OutputRecorder, events: list[AgentEvent], line: str | None = None) -> None:
    """Record parsed events, except text that is the output line itself (a `shell` run's stdout, aider's
    prose): the line's own log event already holds it, and a copy would double every event write."""
    for event in events:
        if isinstance(event, Text) and event.text == line:
            continue
        data = event_data(event)
        if data is not None:
            recorder.add_event("agent", data)


async def _drain(output: asyncio.Task[None], run: SandboxRun) -> None:
    """Let the output reader reach the end; kill stray children that keep the pipes open."""
    done, _ = await asyncio.wait({output}, timeout=OUTPUT_DRAIN_S)
    if not done:
        await run.kill()
        await output


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


def _exit_outcome(
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


def _with_metering(outcome: Outcome, launch: Launch) -> Outcome:
    """The gateway's usage and cost (authoritative), and the CLI's own cost report as a cross-check."""
    meter, final = launch.meter, launch.report.final
    cli_cost = final.cost_usd if final is not None else None
    return replace(
        outcome,
        usage=meter.usage if meter is not None else None,
        cost_micro_usd=meter.cost_micro_usd if meter is not None else 0,
        cli_cost_micro_usd=round(cli_cost * 1_000_000) if cli_cost is not None else None,
    )
