"""A fleet worker: runs, in this process, the dispatches of the agents it advertises, taken from
procrastinate jobs (the procrastinate queue backend), alongside any number of workers on other machines.

- **Taking work.** A procrastinate worker listens on the queues of this worker's agents, with as many
  jobs at once as it has slots. Each job claims its dispatch (`FleetRuns.claim`: the same admission
  rules as the embedded worker) and runs it with the `DispatchExecutor`; a dispatch that must wait gets
  a job for later, written with the hold.
- **Cancel.** procrastinate's abort (NOTIFY) cancels the job's task; the task tells the run to stop and
  waits for it to record `cancelled`. Every heartbeat the worker also stops runs whose dispatch has
  ended meanwhile (a cancel the API recorded itself, after its grace time).
- **Presence and upkeep.** The worker is registered in `workers` and beats every `heartbeat_s`
  (`WorkerPresence`). Every `heartbeat_s` it also takes workers silent for `stale_s` for dead and takes
  back what they held, and gives a job to queued dispatches left without one (`FleetRuns`).
- **Drain.** `drain` stops taking work, lets runs finish for a while, then kills the rest and hands their
  dispatches back to the queue.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from outpost.db.repositories.queue_jobs import TASK_NAME, queue_of
from outpost.services.fleet_runs import FleetRuns
from outpost.services.periodic import Periodic
from outpost.settings import WorkerSettings
from outpost.worker.executor import DispatchExecutor
from outpost.worker.presence import WorkerPresence

if TYPE_CHECKING:
    from procrastinate import App, JobContext

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Work:
    dispatch_id: str
    task: asyncio.Task[None]
    abort: asyncio.Event


class FleetWorker:
    def __init__(
        self,
        app: App,
        runs: FleetRuns,
        executor: DispatchExecutor,
        presence: WorkerPresence,
        settings: WorkerSettings,
        agents: Sequence[str],
    ) -> None:
        self._app = app
        self._runs = runs
        self._executor = executor
        self._presence = presence
        self._settings = settings
        self._queues = [queue_of(agent) for agent in sorted(agents)]
        self._works: dict[int, _Work] = {}
        """By procrastinate job id."""
        self._procrastinate: asyncio.Task[None] | None = None
        self._upkeep = Periodic("fleet upkeep", self._upkeep_step, settings.heartbeat_s)
        self._stopping = False
        self.ended = asyncio.Event()
        """Set when this worker can take no more work of its own accord (see `end_reason`): the process
        must stop."""
        self.end_reason: str | None = None
        """Another worker took this one for dead (it missed heartbeats) and handed its dispatches on, or
        procrastinate's worker stopped (its database connection failed)."""
        app.task(name=TASK_NAME, pass_context=True)(self._run_job)

    @property
    def busy(self) -> int:
        return len(self._works)

    def is_healthy(self) -> bool:
        running = self._procrastinate is not None and not self._procrastinate.done()
        return running and not self.ended.is_set()

    def start(self) -> None:
        settings = self._settings
        worker = self._app.run_worker_async(
            queues=self._queues, name=self._presence.id, concurrency=settings.slots,
            install_signal_handlers=False, delete_jobs="always",
            fetch_job_polling_interval=settings.poll_interval_s,
            abort_job_polling_interval=settings.heartbeat_s,
            update_heartbeat_interval=settings.heartbeat_s, stalled_worker_timeout=settings.stale_s,
        )  # fmt: skip
        self._procrastinate = asyncio.create_task(worker, name="outpost-fleet-worker")
        self._procrastinate.add_done_callback(self._procrastinate_ended)
        self._upkeep.start()
        log.info("worker %s takes dispatches from %s", self._presence.id, ", ".join(self._queues))

    async def stop(self) -> None:
        """`drain` for the configured `drain_timeout_s`."""
        await self.drain(self._settings.drain_timeout_s)

    async def drain(self, timeout_s: float) -> None:
        """Stop taking work, let the runs in progress finish for up to `timeout_s`, then kill those still
        running and queue their dispatches again for other workers. Only the first call does anything.

        While it drains, procrastinate no longer listens for aborts: a cancel then reaches a run at the
        next heartbeat, once the API has recorded it (after its grace time)."""
        if self._stopping or self._procrastinate is None:
            return
        self._stopping = True
        await self._mark_draining()
        self._procrastinate.cancel()  # procrastinate stops fetching, then waits for the jobs in progress
        running = [work.task for work in self._works.values()]
        if running and timeout_s > 0:
            await asyncio.wait(running, timeout=timeout_s)
        handed_back = [work.dispatch_id for work in self._works.values() if not work.task.done()]
        for work in self._works.values():
            work.task.cancel()  # the run is killed, and its dispatch handed back
        await asyncio.gather(self._procrastinate, return_exceptions=True)
        await self._upkeep.stop()
        if handed_back:
            log.warning("worker %s handed back %s as it stopped", self._presence.id, handed_back)

    async def _run_job(self, context: JobContext, dispatch_id: str) -> None:
        """The procrastinate task of a dispatch's job. Its cancellation is procrastinate's abort (a cancel):
        the run is told to stop, and the task waits for it to record how it ended."""
        if self._stopping:  # taken as the worker began to stop: leave it to another worker
            await self._runs.defer_again(dispatch_id)
            return
        job_id = context.job.id or 0
        abort = asyncio.Event()
        task = asyncio.create_task(self._claim_and_run(dispatch_id, abort), name=f"dispatch-{dispatch_id}")
        self._works[job_id] = _Work(dispatch_id, task, abort)
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():
                return  # this worker is stopping and handed the dispatch back: the job is done with
            log.info("dispatch %s: abort received by worker %s", dispatch_id, self._presence.id)
            abort.set()
            await asyncio.wait({task})
            raise
        finally:
            self._works.pop(job_id, None)

    async def _claim_and_run(self, dispatch_id: str, abort: asyncio.Event) -> None:
        """Claim the dispatch and run it; cancelled (the worker stops), hand it back once the run is
        killed. A claim under way when that happens completes first, so nothing is left claimed."""
        claiming = asyncio.ensure_future(self._runs.claim(dispatch_id, self._presence.id))
        try:
            row = await asyncio.shield(claiming)
        except asyncio.CancelledError:
            claimed = await claiming
            if claimed is not None:
                await self._runs.hand_back(claimed, self._presence.id)
            raise
        if row is None:
            return
        try:
            await self._executor.execute(row, abort)
        except asyncio.CancelledError:
            await self._runs.hand_back(row, self._presence.id)  # after the executor killed the run
            raise
        await self._runs.release_held(row.tenant_id, 1)  # its slot under the tenant's cap is free

    def _procrastinate_ended(self, task: asyncio.Task[None]) -> None:
        if self._stopping:
            return
        failure = None if task.cancelled() else task.exception()
        self._end(
            f"procrastinate's worker stopped ({failure!r})" if failure else "procrastinate's worker stopped"
        )

    def _end(self, reason: str) -> None:
        if not self.ended.is_set():
            log.error("worker %s stops taking work: %s", self._presence.id, reason)
            self.end_reason = reason
            self.ended.set()

    async def _upkeep_step(self) -> None:
        if self._presence.taken_for_dead:
            self._end("the fleet took it for dead (it missed heartbeats) and handed its dispatches on")
        await self._stop_ended_runs()
        await self._runs.reap_lost(self._settings.stale_s)
        await self._runs.repair_jobs(self._settings.stale_s)

    async def _stop_ended_runs(self) -> None:
        running = {work.dispatch_id: work for work in self._works.values() if not work.abort.is_set()}
        for dispatch_id in await self._runs.ended_among(set(running)):
            running[dispatch_id].abort.set()

    async def _mark_draining(self) -> None:
        try:
            await self._presence.drain()
        except Exception:
            log.exception("worker %s could not record that it drains", self._presence.id)
