"""The fleet's health report, built from what the store holds: no I/O here, so every rule is unit-tested."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from outpost.db.repositories.fleet import UnfinishedCount
from outpost.db.repositories.workers import WorkerRow
from outpost.domain.dispatch import DispatchStatus
from outpost.schemas.fleet import (
    DurationPercentiles,
    FleetAgent,
    FleetCapacity,
    FleetHealth,
    FleetWorker,
    WorkerState,
)
from outpost.services.fleet_health import assess
from outpost.services.fleet_recent import AgentOutcomes
from outpost.services.fleet_settings import WORKER_STALE_S, FleetSettings

WINDOW = timedelta(hours=1)
"""The span of the report's "last hour" figures, and how long stopped workers stay listed."""
_NO_OUTCOMES = AgentOutcomes()


@dataclass(slots=True)
class _Queue:
    """One agent's unfinished dispatches while they are being counted."""

    queued: int = 0
    held: int = 0
    running: int = 0
    oldest_waiting: datetime | None = None


def build_report(
    now: datetime,
    workers: Iterable[WorkerRow],
    unfinished: Iterable[UnfinishedCount],
    finished: Mapping[str, AgentOutcomes],
    settings: FleetSettings,
    stale_s: float = WORKER_STALE_S,
) -> FleetHealth:
    """The report as of `now`: `workers` as `list_workers` gives them, `unfinished` counts now, and how
    the dispatches that `finished` within the window before `now` ended, by agent."""
    listed = [fleet_worker(row, now, stale_s) for row in workers]
    agents = agent_figures(now, listed, unfinished, finished)
    status, reasons = assess(listed, agents, settings, stale_s)
    taking_work = [worker for worker in listed if worker.state is WorkerState.LIVE]
    capacity = FleetCapacity(
        workers=len(taking_work),
        slots=sum(worker.slots for worker in taking_work),
        busy=sum(worker.busy for worker in taking_work),
    )
    return FleetHealth(
        status=status, reasons=reasons, as_of=now, window_s=int(WINDOW.total_seconds()),
        capacity=capacity, workers=listed, agents=agents,
    )  # fmt: skip


def fleet_worker(row: WorkerRow, now: datetime, stale_s: float) -> FleetWorker:
    age_s = max(0.0, (now - row.heartbeat_at).total_seconds())
    return FleetWorker(
        id=row.id, host=row.host, pid=row.pid, version=row.version, state=worker_state(row, age_s, stale_s),
        slots=row.slots, busy=row.busy, agents=sorted(row.agents), started_at=row.started_at,
        last_heartbeat_at=row.heartbeat_at, heartbeat_age_s=round(age_s, 3), stopped_at=row.stopped_at,
    )  # fmt: skip


def worker_state(row: WorkerRow, heartbeat_age_s: float, stale_s: float) -> WorkerState:
    if row.stopped_at is not None:
        return WorkerState.STOPPED
    if heartbeat_age_s > stale_s:
        return WorkerState.SILENT
    return WorkerState.DRAINING if row.draining else WorkerState.LIVE


def agent_figures(
    now: datetime,
    workers: Iterable[FleetWorker],
    unfinished: Iterable[UnfinishedCount],
    finished: Mapping[str, AgentOutcomes],
) -> dict[str, FleetAgent]:
    """Per agent, in name order: every agent a listed worker runs, or with dispatches in the figures."""
    queues = {agent: _Queue() for worker in workers for agent in worker.agents}
    for count in unfinished:
        _count_unfinished(queues.setdefault(count.agent, _Queue()), count)
    names = sorted(queues.keys() | finished.keys())
    return {
        name: _agent(queues.get(name) or _Queue(), finished.get(name) or _NO_OUTCOMES, now) for name in names
    }


def _count_unfinished(queue: _Queue, count: UnfinishedCount) -> None:
    if count.status != DispatchStatus.QUEUED:
        queue.running += count.count
        return
    queue.queued += count.count
    if count.held:
        queue.held += count.count
    elif queue.oldest_waiting is None or count.oldest_created_at < queue.oldest_waiting:
        queue.oldest_waiting = count.oldest_created_at


def _agent(queue: _Queue, outcomes: AgentOutcomes, now: datetime) -> FleetAgent:
    ended = outcomes.succeeded + outcomes.failed
    waited_s = None if queue.oldest_waiting is None else (now - queue.oldest_waiting).total_seconds()
    return FleetAgent(
        queued=queue.queued, held=queue.held, running=queue.running, succeeded=outcomes.succeeded,
        failed=outcomes.failed, cancelled=outcomes.cancelled,
        success_rate=round(outcomes.succeeded / ended, 4) if ended else None,
        failures=dict(sorted(outcomes.failures.items())), duration_s=duration_percentiles(outcomes.durations),
        oldest_queued_age_s=None if waited_s is None else round(max(0.0, waited_s), 3),
    )  # fmt: skip


def duration_percentiles(ordered: Sequence[float]) -> DurationPercentiles | None:
    """p50, p90 and p99 of durations in ascending order; None for none."""
    if not ordered:
        return None
    return DurationPercentiles(
        p50=round(percentile(ordered, 0.5), 3),
        p90=round(percentile(ordered, 0.9), 3),
        p99=round(percentile(ordered, 0.99), 3),
    )


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """The `fraction` (0 to 1) percentile of sorted, non-empty `ordered`, interpolating linearly between
    the closest ranks."""
    rank = (len(ordered) - 1) * fraction
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
