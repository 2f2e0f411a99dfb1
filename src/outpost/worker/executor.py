"""Runs one dispatch attempt: workspace, sandbox, output, timeout and abort, final state."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from outpost.agents.base import AgentRequest, OutputSummary
from outpost.agents.registry import AgentRegistry
from outpost.db.repositories.dispatches import DispatchRow
from outpost.domain.dispatch import DispatchStatus, FailureReason, Tier
from outpost.errors import SandboxError
from outpost.sandbox.base import LimitName, RequestedLimits, Sandbox, SandboxRun, SandboxSpec
from outpost.services.runs import Outcome, RunService
from outpost.settings import LimitSettings
from outpost.worker.recorder import OutputRecorder

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
        limits: LimitSettings,
        flush_s: float,
    ) -> None:
        self._runs = runs
        self._sandbox = sandbox
        self._agents = agents
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
        adapter = self._agents.get(row.agent)
        request = AgentRequest(task=row.task, tier=Tier(row.tier), model=row.model, env=row.env)
        command = adapter.build_command(request)
        recorder = OutputRecorder(self._runs, row.id, self._flush_s, self._limits.max_log_bytes)
        tenant_egress = await self._runs.tenant_egress_allow(row.tenant_id)
        spec = SandboxSpec(
            run_id=f"{row.id}.{row.attempt}", argv=command.argv, env=command.env, workdir=workdir,
            events=recorder.event, limits=limits,
            egress_allow=(*tenant_egress, *(row.egress_allow or ())),
        )  # fmt: skip
        try:
            run = await self._sandbox.start(spec)
        except SandboxError as exc:
            await recorder.close()
            return Outcome(DispatchStatus.FAILED, reason=FailureReason.SANDBOX_ERROR, detail=exc.detail)
        started.append(run)
        try:
            return await self._supervise(run, row, abort, recorder, adapter.new_summary())
        finally:
            await recorder.close()

    async def _supervise(
        self,
        run: SandboxRun,
        row: DispatchRow,
        abort: asyncio.Event,
        recorder: OutputRecorder,
        summary: OutputSummary,
    ) -> Outcome:
        output = asyncio.create_task(_record_output(run, recorder, summary))
        exited = asyncio.create_task(run.wait())
        aborted = asyncio.create_task(abort.wait())
        try:
            await asyncio.wait({exited, aborted}, timeout=row.timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            aborted.cancel()
        # Decide what ended the run before killing it: the kill makes `exited` complete too.
        exited_first = exited.done()
        if not exited_first:
            await run.kill()
            exited.cancel()
        await _drain(output, run)
        if exited_first:
            code = exited.result()
            # Only a failed run can have failed on a limit; a success skips the cgroup and disk reads.
            exceeded = await run.limit_exceeded() if code != 0 else None
            return _exit_outcome(code, summary, exceeded)
        if abort.is_set():
            return Outcome(DispatchStatus.CANCELLED, result=summary.result())
        return Outcome(
            DispatchStatus.TIMED_OUT,
            result=summary.result(),
            reason=FailureReason.TIMED_OUT,
            detail=f"killed after its {row.timeout_s} s limit",
        )


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


async def _record_output(run: SandboxRun, recorder: OutputRecorder, summary: OutputSummary) -> None:
    async for line in run.output():
        summary.feed(line.stream, line.text)
        recorder.add(line)


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


def _exit_outcome(exit_code: int, summary: OutputSummary, exceeded: LimitName | None) -> Outcome:
    if exit_code == 0:
        return Outcome(DispatchStatus.SUCCEEDED, exit_code=0, result=summary.result())
    detail = f"killed by signal {-exit_code}" if exit_code < 0 else f"exited with status {exit_code}"
    reason = FailureReason.AGENT_ERROR
    if exceeded is not None:
        reason, limit_detail = LIMIT_FAILURES[exceeded]
        detail = f"{limit_detail} ({detail})"
    return Outcome(
        DispatchStatus.FAILED, exit_code=exit_code, result=summary.result(), reason=reason, detail=detail
    )
