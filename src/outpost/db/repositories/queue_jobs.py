"""procrastinate jobs for dispatches, written and ended inside Outpost's own transactions (PostgreSQL only).

Each queued dispatch has one waiting job: task TASK_NAME, on the queue of its agent (`queue_of`), with
the dispatch's id as its queueing lock (procrastinate keeps at most one waiting job per lock) and in its
arguments. A job only says "look at this dispatch": the claim, in the dispatch's own row, decides whether
it runs, so a stray or duplicate job costs one claim that finds nothing to do.

These statements call procrastinate's versioned SQL functions and read its tables, pinned in
`db.job_queue_schema`; they are the only place Outpost does.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, bindparam, text

from outpost.db.store import Connection

TASK_NAME = "outpost.run_dispatch"
"""The procrastinate task every dispatch job runs (`worker.fleet_worker`)."""
QUEUE_PREFIX = "agent."


def queue_of(agent: str) -> str:
    """The procrastinate queue of an agent's dispatches: only workers that can run it listen on it."""
    return QUEUE_PREFIX + agent


_DEFER = text("""
    SELECT procrastinate_defer_jobs_v1(ARRAY[ROW(
        :prefix || d.agent, :task, 0, NULL, d.id, jsonb_build_object('dispatch_id', d.id),
        COALESCE(:run_at, d.not_before)
    )::procrastinate_job_to_defer_v1])
    FROM dispatches AS d
    WHERE d.id = :id AND NOT EXISTS (
        SELECT 1 FROM procrastinate_jobs AS j
        WHERE j.queueing_lock = d.id AND j.task_name = :task AND j.status = 'todo'
    )
""").bindparams(bindparam("run_at", type_=DateTime(timezone=True)))


async def defer(conn: Connection, dispatch_id: str, run_at: datetime | None = None) -> bool:
    """Write the dispatch's job, to be taken at `run_at` (default: when the dispatch's `not_before` says,
    else at once), unless one is waiting already. True when a job was written. Its workers hear of it
    when the transaction commits (procrastinate's trigger NOTIFYs the queue)."""
    parameters = {"prefix": QUEUE_PREFIX, "task": TASK_NAME, "id": dispatch_id, "run_at": run_at}
    return (await conn.execute(_DEFER, parameters)).first() is not None


_BRING_FORWARD = text("""
    WITH held AS (
        SELECT j.id FROM dispatches AS d
        JOIN procrastinate_jobs AS j ON j.queueing_lock = d.id AND j.task_name = :task
        WHERE d.tenant_id = :tenant AND d.status = 'queued'
            AND (d.not_before IS NULL OR d.not_before <= now())
            AND j.status = 'todo' AND j.scheduled_at > now()
        ORDER BY d.id
        LIMIT :limit
    ), moved AS (
        UPDATE procrastinate_jobs AS j SET scheduled_at = now() FROM held WHERE j.id = held.id
        RETURNING j.id, j.queue_name
    )
    SELECT pg_notify(
        'procrastinate_queue_v1#' || queue_name, json_build_object('type', 'job_inserted', 'job_id', id)::text
    ) FROM moved
""")


async def bring_forward(conn: Connection, tenant_id: str, limit: int | None) -> int:
    """Make the waiting jobs of up to `limit` (None: all) of the tenant's queued dispatches held back
    without a time to wait for (its cap) due now, oldest dispatch first, and wake the workers of their
    queues as procrastinate's own insert trigger does (on commit). A job keeps its id, so the dispatch
    keeps its place before later submissions. How many were brought forward."""
    parameters = {"task": TASK_NAME, "tenant": tenant_id, "limit": limit}
    return len((await conn.execute(_BRING_FORWARD, parameters)).all())


_FAIL_RUNNING = text("""
    SELECT procrastinate_finish_job_v1(j.id, 'failed', false)
    FROM procrastinate_jobs AS j
    WHERE j.queueing_lock = :id AND j.task_name = :task AND j.status = 'doing'
""")


async def fail_running(conn: Connection, dispatch_id: str) -> int:
    """Mark the dispatch's jobs still running (`doing`) as failed: their worker is gone, and a job
    left `doing` would linger for ever. How many there were."""
    result = await conn.execute(_FAIL_RUNNING, {"id": dispatch_id, "task": TASK_NAME})
    return len(result.all())


_FAIL_ABANDONED = text("""
    SELECT procrastinate_finish_job_v1(j.id, 'failed', false)
    FROM procrastinate_jobs AS j
    LEFT JOIN procrastinate_workers AS w ON w.id = j.worker_id
    WHERE j.task_name = :task AND j.status = 'doing'
        AND (w.id IS NULL OR w.last_heartbeat < now() - make_interval(secs => :stale_s))
        AND NOT EXISTS (
            SELECT 1 FROM dispatches AS d
            WHERE d.id = j.queueing_lock AND d.status IN ('provisioning', 'running')
        )
""")


async def fail_abandoned(conn: Connection, stale_s: float) -> int:
    """Mark failed the running jobs whose procrastinate worker has been silent for `stale_s` (or is
    gone), unless their dispatch is in progress (the reaper hands those on, with their jobs): a worker
    that died before its claim, or after a cancel the API recorded itself. How many there were."""
    result = await conn.execute(_FAIL_ABANDONED, {"task": TASK_NAME, "stale_s": stale_s})
    return len(result.all())


_ORPHANED = text("""
    SELECT d.id FROM dispatches AS d
    WHERE d.status = 'queued' AND NOT EXISTS (
        SELECT 1 FROM procrastinate_jobs AS j
        WHERE j.queueing_lock = d.id AND j.task_name = :task AND j.status IN ('todo', 'doing')
    )
    ORDER BY d.id
    LIMIT :limit
""")


async def orphaned(conn: Connection, limit: int) -> list[str]:
    """Queued dispatches without a job waiting or running: those submitted before the database used
    this backend, and those whose job ended without a claim (its worker died between taking the job and
    claiming the dispatch, or the claim failed). Oldest first."""
    parameters = {"task": TASK_NAME, "limit": limit}
    return [str(found) for found in (await conn.execute(_ORPHANED, parameters)).scalars()]


_SWEEP_LOCK = text("SELECT pg_try_advisory_xact_lock(hashtextextended('outpost.queue_jobs.sweep', 0))")


async def try_lock_sweep(conn: Connection) -> bool:
    """Take the sweep's lock until the transaction ends; False when another worker's sweep holds it (two
    sweeps would write the same jobs, and the second would break procrastinate's one-waiting-job rule)."""
    return bool((await conn.execute(_SWEEP_LOCK)).scalar_one())
