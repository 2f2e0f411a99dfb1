"""Runs one dispatch attempt: workspace, sandbox, output, timeout and abort, final state."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from outpost.agents.registry import AgentRegistry
from outpost.db.repositories.dispatches import DispatchRow
from outpost.domain.dispatch import DispatchStatus, FailureReason
from outpost.errors import InvalidInput, OutpostError, SandboxError
from outpost.sandbox.base import Gate, RequestedLimits, Sandbox, SandboxRun, StartCalledOff
from outpost.secrets.box import SecretUnreadable
from outpost.services.runs import NewEvent, Outcome, RunService
from outpost.settings import LimitSettings
from outpost.worker.agent_launch import AgentRuntime, Launch, prepare_launch
from outpost.worker.output_reader import drain_output, record_agent_events, record_output
from outpost.worker.push_step import push_step
from outpost.worker.recorder import OutputRecorder
from outpost.worker.run_compute import compute_events, compute_samples
from outpost.worker.run_outcome import exit_outcome, stopped_outcome, with_metering
from outpost.worker.run_results import RunResults
from outpost.worker.run_workspace import PreparedWorkspace, RunWorkspaces

log = logging.getLogger(__name__)


class DispatchExecutor:
    def __init__(
        self,
        *,
        runs: RunService,
        sandbox: Sandbox,
        agents: AgentRegistry,
        runtime: AgentRuntime,
        workspaces: RunWorkspaces,
        results: RunResults,
        limits: LimitSettings,
        flush_s: float,
        compute_sample_s: float,
    ) -> None:
        self._runs = runs
        self._workspaces = workspaces
        self._results = results
        self._sandbox = sandbox
        self._agents = agents
        self._runtime = runtime
        self._limits = limits
        self._flush_s = flush_s
        self._compute_sample_s = compute_sample_s

    async def execute(self, row: DispatchRow, abort: asyncio.Event) -> None:
        """Run a claimed (`provisioning`) dispatch to a terminal state. Never raises."""
        held = _Held()
        try:
            outcome = await self._attempt(row, held, abort)
            if outcome is not None:
                outcome = await self._keep_results(row, held, outcome)
                await self._runs.finish(row.id, outcome, row.attempt)
        except Exception:
            log.exception("dispatch %s failed inside the worker", row.id)
            internal = Outcome(
                DispatchStatus.FAILED, reason=FailureReason.INTERNAL, detail="internal worker error"
            )
            await self._runs.finish(row.id, internal, row.attempt)
        finally:
            # After the outcome is recorded: the sweep for stray processes takes milliseconds, and the
            # outcome does not depend on it (the main process has ended, or was killed already).
            kills = [run.kill() for run in held.runs]
            removals = [self._sandbox.remove_workspace(w) for w in held.workdirs]
            await _to_the_end([*kills, *removals])

    async def _attempt(self, row: DispatchRow, held: _Held, abort: asyncio.Event) -> Outcome | None:
        """Run the attempt. The workspace and the sandbox run, once made, go into `held` for the caller
        to capture from, kill and remove."""
        limits = await self._workspaces.limits_for(row, _requested_limits(row.limits))
        # Read while the workspace is made: the sandbox needs it as it starts, and waits for nothing else.
        egress_read = asyncio.ensure_future(self._runs.tenant_egress_allow(row.tenant_id))
        try:
            prepared = await self._make_workspace(row, limits, held, abort)
            if isinstance(prepared, Outcome):
                return prepared
            recorder = OutputRecorder(self._runs, row.id, self._flush_s, self._limits.max_log_bytes)
            started = await self._start_running(row, prepared, limits, recorder, egress_read)
        finally:
            _discard(egress_read)
        if started is None or isinstance(started, Outcome):
            await recorder.close()
            return started
        launch, run = started
        held.runs.append(run)
        try:
            ended = await self._supervise(run, row, abort, recorder, launch)
            return launch.budget.outcome(ended) if launch.budget is not None else ended
        finally:
            launch.revoke(self._runtime)
            await recorder.close()

    async def _make_workspace(
        self, row: DispatchRow, limits: RequestedLimits, held: _Held, abort: asyncio.Event
    ) -> PreparedWorkspace | Outcome:
        """The run's workspace and its private dir beside it, filled; kept in `held`."""
        try:
            workdir = await self._sandbox.create_workspace(row.id, limits)
            held.workdirs.append(workdir)
            # Beside the workspace, on the same kind of file system (a tmpfs for bwrap): git writes an
            # object there for every changed file, ~4x faster than into a data dir on ext4 here.
            private = await self._sandbox.create_workspace(
                f"{row.id}.private", self._workspaces.private_limits(limits)
            )
            held.workdirs.append(private)
        except SandboxError as exc:
            return Outcome(DispatchStatus.FAILED, reason=FailureReason.SANDBOX_ERROR, detail=exc.detail)
        held.private = private
        prepared = await self._prepare_workspace(row, workdir, private, abort)
        if not isinstance(prepared, Outcome):
            held.prepared = prepared
        return prepared

    async def _start_running(
        self,
        row: DispatchRow,
        prepared: PreparedWorkspace,
        limits: RequestedLimits,
        recorder: OutputRecorder,
        egress_read: asyncio.Future[tuple[str, ...]],
    ) -> tuple[Launch, SandboxRun] | Outcome | None:
        """Record `running` while the sandbox gets ready, and start the command once it is recorded.
        None when the dispatch was cancelled before its command started; an Outcome when the command
        could not start. Whatever happens, recording `running` is over before this returns."""
        marking = asyncio.ensure_future(self._runs.mark_running(row, base_commit=_base_commit(row, prepared)))
        try:
            launch = await self._prepare(row, prepared, limits, recorder, await egress_read)
            return launch, await self._start(launch, _recorded(marking))
        except StartCalledOff:
            return None  # cancelled before it started
        except (SandboxError, InvalidInput) as exc:
            failed = Outcome(DispatchStatus.FAILED, reason=FailureReason.SANDBOX_ERROR, detail=exc.detail)
        except SecretUnreadable as exc:
            failed = Outcome(DispatchStatus.FAILED, reason=FailureReason.AUTH, detail=exc.detail)
        finally:
            await asyncio.wait({marking})  # what comes next (the outcome, a hand-back) comes after it
        return failed if marking.result() is not None else None

    async def _start(self, launch: Launch, gate: Gate) -> SandboxRun:
        """Start the run once `gate` lets it; a launch that does not start is revoked (its gateway token,
        its budget hold)."""
        try:
            return await self._sandbox.start(launch.spec, gate)
        except BaseException:
            launch.revoke(self._runtime)
            raise

    async def _prepare_workspace(
        self, row: DispatchRow, workdir: Path, private: Path, abort: asyncio.Event
    ) -> PreparedWorkspace | Outcome:
        """Fill the workspace, unless a cancel comes first (a first fetch may take minutes)."""
        preparing = asyncio.ensure_future(self._workspaces.prepare(row, workdir, private))
        aborted = asyncio.ensure_future(abort.wait())
        try:
            await asyncio.wait({preparing, aborted}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            aborted.cancel()
            if not preparing.done():
                preparing.cancel()
                await asyncio.gather(preparing, return_exceptions=True)
        if preparing.cancelled():
            return Outcome(DispatchStatus.CANCELLED)
        try:
            return preparing.result()
        except SecretUnreadable as exc:
            return Outcome(DispatchStatus.FAILED, reason=FailureReason.AUTH, detail=exc.detail)
        except OutpostError as exc:
            detail = f"the workspace could not be prepared: {exc.detail}"
            return Outcome(DispatchStatus.FAILED, reason=FailureReason.WORKSPACE_ERROR, detail=detail)

    async def _keep_results(self, row: DispatchRow, held: _Held, outcome: Outcome) -> Outcome:
        """Capture and store the run's artifacts, push and keep the workspace as asked, and say so in
        an event before the terminal one. A push that fails fails the dispatch."""
        for run in held.runs:
            await run.kill()  # capture reads the workspace: no process of the run may still change it
        compute = await compute_events(held.runs, row.attempt)
        scratch = await self._workspaces.scratch_dir(held.private) if held.private is not None else None
        kept = await self._results.keep(row, held.prepared, outcome.result, scratch)
        data: dict[str, object] = {"names": [artifact.name for artifact in kept.artifacts]}
        if kept.changes is not None:
            data |= {"files_changed": len(kept.changes.files), "patch_bytes": kept.changes.patch_bytes}
        if row.push_branch is not None:
            outcome, data["push"] = await push_step(self._workspaces, row, held.prepared, kept, outcome)
        if held.prepared is not None:
            try:
                await self._workspaces.save(row, held.prepared, kept.changes.tree if kept.changes else None)
            except OutpostError as exc:
                kept.warnings.append(f"the persistent workspace keeps its earlier state: {exc.detail}")
        if kept.warnings:
            data["warnings"] = kept.warnings
        await self._runs.record(row.id, [*compute, NewEvent("artifacts", data)])
        return outcome

    async def _prepare(
        self,
        row: DispatchRow,
        prepared: PreparedWorkspace,
        limits: RequestedLimits,
        recorder: OutputRecorder,
        tenant_egress: tuple[str, ...],
    ) -> Launch:
        return await prepare_launch(
            self._runtime, self._sandbox, self._agents.get(row.agent), row, prepared.workdir, limits,
            recorder.event, (*tenant_egress, *(row.egress_allow or ())), prepared.read_only,
            on_staged=prepared.after_staged,
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
        output = asyncio.create_task(record_output(run, recorder, report))
        exited = asyncio.create_task(run.wait())
        aborted = asyncio.create_task(abort.wait())
        gave_up = asyncio.create_task(launch.meter.gave_up.wait()) if launch.meter else aborted
        # A call refused over budget ends the run at once (`_attempt` gives the outcome its reason).
        over_budget = asyncio.create_task(launch.budget.exceeded.wait()) if launch.budget else aborted
        # Samples of its compute while it runs: the ledger charges them if the final one never comes.
        sampling = compute_samples([run], row.attempt, self._compute_sample_s, recorder.event)
        try:
            async with sampling:
                await asyncio.wait(
                    {exited, aborted, gave_up, over_budget}, timeout=row.timeout_s,
                    return_when=asyncio.FIRST_COMPLETED,
                )  # fmt: skip
        finally:
            aborted.cancel()
            gave_up.cancel()
            over_budget.cancel()
        # Decide what ended the run before killing it: the kill makes `exited` complete too.
        exited_first = exited.done()
        if not exited_first:
            await run.kill()
            exited.cancel()
        await drain_output(output, run, recorder)
        record_agent_events(recorder, report.finish())
        if exited_first:
            code = exited.result()
            # Only a failed run can have failed on a limit; a success skips the cgroup and disk reads.
            exceeded = await run.limit_exceeded() if code != 0 else None
            return with_metering(exit_outcome(code, report, exceeded, launch.meter), launch)
        return with_metering(stopped_outcome(row.timeout_s, abort.is_set(), report, launch.meter), launch)


@dataclass(slots=True)
class _Held:
    """What an attempt made: the caller captures from it, kills and removes it."""

    runs: list[SandboxRun] = field(default_factory=list)
    workdirs: list[Path] = field(default_factory=list)
    private: Path | None = None
    """The worker's own area beside the workspace (its baseline, capture's files)."""
    prepared: PreparedWorkspace | None = None


def _base_commit(row: DispatchRow, prepared: PreparedWorkspace) -> str | None:
    """The commit the workspace started from; a workspace without a repository has none to show."""
    return prepared.baseline.commit if row.repo is not None else None


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


def _discard(future: asyncio.Future[Any]) -> None:
    """Cancel `future` if it still runs; a failure it ended with is dropped (nobody needed its result)."""
    future.cancel()
    future.add_done_callback(lambda done: done.cancelled() or done.exception())


def _recorded(marking: asyncio.Future[DispatchRow | None]) -> Gate:
    """A gate that opens once `running` is recorded, and stays shut when it was not (a cancel came
    first). Cancelling the start does not cancel the recording."""

    async def gate() -> bool:
        return await asyncio.shield(marking) is not None

    return gate


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
