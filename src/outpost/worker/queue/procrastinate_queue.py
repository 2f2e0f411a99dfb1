"""The procrastinate queue backend (PostgreSQL): a dispatch's queue entry is a procrastinate job, written
in the transaction that stores the dispatch; `outpost worker` processes on any machine take the jobs of
the agents they can run.

API servers only enqueue and abort. A process that also runs dispatches (`outpost worker`, or `outpost
serve` with `OUTPOST_WORKER__ENABLED=true`) holds a `FleetWorker`, which this backend starts and stops.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from outpost.db.job_queue_schema import check_job_queue_schema
from outpost.db.repositories import dispatches as dispatch_repo
from outpost.db.repositories import queue_jobs
from outpost.db.store import Connection, Store
from outpost.domain.dispatch import DispatchStatus
from outpost.events.postgres import libpq_url

if TYPE_CHECKING:
    from procrastinate import App

    from outpost.services.fleet_runs import FleetRuns
    from outpost.worker.fleet_worker import FleetWorker

POOL_MAX_CONNECTIONS = 4
"""procrastinate's own connections per process (a worker's LISTEN connection comes on top)."""
STOPPED_POLL_S = 0.05
"""How often a cancel that reached a running dispatch looks whether the run has recorded its end."""


def build_app(database_url: str) -> App:
    """A procrastinate app on the store's database, not yet opened."""
    from procrastinate import App, PsycopgConnector  # noqa: PLC0415 - loads only when this backend is chosen

    connector = PsycopgConnector(conninfo=libpq_url(database_url), min_size=1, max_size=POOL_MAX_CONNECTIONS)
    return App(connector=connector)


class ProcrastinateQueue:
    """Implements the DispatchQueue protocol over procrastinate jobs; see the module docstring."""

    def __init__(self, store: Store, app: App, runs: FleetRuns, fleet: FleetWorker | None = None) -> None:
        self._store = store
        self._app = app
        self._runs = runs
        self._fleet = fleet
        self._open = False

    async def enqueue(self, conn: Connection, dispatch_id: str) -> None:
        await queue_jobs.defer(conn, dispatch_id)

    def wake(self) -> None:
        """Nothing to do: procrastinate NOTIFYs the agent's queue when the job commits."""

    async def release_held(self, tenant_id: str, count: int | None) -> None:
        await self._runs.release_held(tenant_id, count)

    async def request_abort(self, dispatch_id: str) -> bool:
        """procrastinate's abort of the dispatch's job: a running job's worker hears of it by NOTIFY (or
        its next poll) and stops the run; a waiting job is deleted. True when a job was running."""
        manager = self._app.job_manager
        reached = False
        for job in await manager.list_jobs_async(queueing_lock=dispatch_id, task=queue_jobs.TASK_NAME):
            if job.id is None or job.status not in {"todo", "doing"}:
                continue
            aborted = await manager.cancel_job_by_id_async(job.id, abort=True, delete_job=True)
            reached = reached or (aborted and job.status == "doing")
        return reached

    async def wait_stopped(self, dispatch_id: str, timeout_s: float) -> bool:
        """Wait until the dispatch has ended (its worker records the cancel), polling its row."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            async with self._store.read() as conn:
                row = await dispatch_repo.get_dispatch(conn, dispatch_id)
            if row is None or DispatchStatus(row.status).is_terminal:
                return True
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(STOPPED_POLL_S)

    def is_healthy(self) -> bool:
        return self._open and (self._fleet is None or self._fleet.is_healthy())

    @property
    def busy(self) -> int:
        return self._fleet.busy if self._fleet is not None else 0

    @property
    def fleet(self) -> FleetWorker | None:
        """The worker this process runs, if it runs one."""
        return self._fleet

    async def open(self) -> None:
        """Raises Unavailable when the database lacks procrastinate's schema (see `db.job_queue_schema`)
        or cannot be reached."""
        async with self._store.read() as conn:
            await check_job_queue_schema(conn)
        await self._app.open_async()
        self._open = True

    def start(self) -> None:
        if self._fleet is not None:
            self._fleet.start()

    async def stop(self) -> None:
        """Drain this process's worker, if any (see `FleetWorker.stop`), then close the connections."""
        if self._fleet is not None:
            await self._fleet.stop()
        if self._open:
            self._open = False
            await self._app.close_async()
