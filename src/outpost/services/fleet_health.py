"""The fleet's overall status, and why, from its workers and per-agent figures (pure rules).

- unhealthy: no worker is beating (live or draining): nothing runs dispatches, queued or yet to come.
- degraded: a worker not stopped has gone silent (presumed lost); a dispatch has waited for a worker
  longer than `queue_wait_s`; an agent's success rate in the window is below `success_rate_min` over at
  least `success_rate_min_samples` dispatches; dispatches wait for an agent no live worker runs; or
  dispatches wait while every beating worker is draining, or every live one has all its slots busy.

Held dispatches (a tenant at its concurrency cap, a provider out of quota) wait by policy, not for a
worker: they count as queued, never as waiting.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from outpost.schemas.fleet import BEATING, FleetAgent, FleetReason, FleetStatus, FleetWorker, WorkerState
from outpost.services.fleet_settings import WORKER_STALE_S, FleetSettings

_NAMED_AT_MOST = 5


def assess(
    workers: Sequence[FleetWorker],
    agents: Mapping[str, FleetAgent],
    settings: FleetSettings,
    stale_s: float = WORKER_STALE_S,
) -> tuple[FleetStatus, list[FleetReason]]:
    """The status and every reason for it, the most severe first; no reasons when healthy. `stale_s`:
    the silence after which the workers were taken for lost (`WorkerSettings.stale_s`)."""
    beating = [worker for worker in workers if worker.state in BEATING]
    reasons = [
        *silent_workers(workers, stale_s),
        *queue_waits(agents, settings),
        *low_success_rates(agents, settings),
    ]
    if not beating:
        return FleetStatus.UNHEALTHY, [no_live_worker(agents, stale_s), *reasons]
    reasons += [*unserved_agents(beating, agents), *capacity_shortage(beating, agents)]
    return (FleetStatus.DEGRADED if reasons else FleetStatus.HEALTHY), reasons


def waiting(agent: FleetAgent) -> int:
    """Queued dispatches waiting for a worker (not held back by admission)."""
    return agent.queued - agent.held


def no_live_worker(agents: Mapping[str, FleetAgent], stale_s: float) -> FleetReason:
    queued = sum(agent.queued for agent in agents.values())
    detail = f"no worker has beaten in the last {stale_s:g} s: nothing runs dispatches"
    if queued:
        detail += f" ({queued} queued)"
    return FleetReason(code="no_live_worker", detail=detail)


def silent_workers(workers: Sequence[FleetWorker], stale_s: float) -> list[FleetReason]:
    silent = [worker for worker in workers if worker.state is WorkerState.SILENT]
    if not silent:
        return []
    named = ", ".join(f"{worker.id} on {worker.host}" for worker in silent[:_NAMED_AT_MOST])
    more = f" and {len(silent) - _NAMED_AT_MOST} more" if len(silent) > _NAMED_AT_MOST else ""
    detail = (
        f"{len(silent)} worker(s) not stopped but silent for over {stale_s:g} s, presumed lost: {named}{more}"
    )
    return [FleetReason(code="worker_silent", detail=detail)]


def queue_waits(agents: Mapping[str, FleetAgent], settings: FleetSettings) -> list[FleetReason]:
    reasons = []
    for name, agent in agents.items():
        age_s = agent.oldest_queued_age_s
        if age_s is not None and age_s > settings.queue_wait_s:
            detail = (
                f"the oldest {name} dispatch waiting for a worker was queued {age_s:.0f} s ago "
                f"(threshold {settings.queue_wait_s:g} s)"
            )
            reasons.append(FleetReason(code="queue_wait", detail=detail))
    return reasons


def low_success_rates(agents: Mapping[str, FleetAgent], settings: FleetSettings) -> list[FleetReason]:
    reasons = []
    for name, agent in agents.items():
        ended = agent.succeeded + agent.failed
        if agent.success_rate is None or ended < settings.success_rate_min_samples:
            continue
        if agent.success_rate < settings.success_rate_min:
            detail = (
                f"{name}: {agent.succeeded} of {ended} dispatches that ended in the last hour succeeded "
                f"({agent.success_rate:.0%}, threshold {settings.success_rate_min:.0%})"
            )
            reasons.append(FleetReason(code="low_success_rate", detail=detail))
    return reasons


def unserved_agents(beating: Sequence[FleetWorker], agents: Mapping[str, FleetAgent]) -> list[FleetReason]:
    """Agents with dispatches waiting that no live worker runs (draining ones are `capacity_shortage`'s)."""
    live = [worker for worker in beating if worker.state is WorkerState.LIVE]
    if not live:
        return []
    served = {agent for worker in live for agent in worker.agents}
    return [
        FleetReason(
            code="agent_unserved",
            detail=f"{waiting(agent)} {name} dispatch(es) wait, but no live worker runs {name}",
        )
        for name, agent in agents.items()
        if waiting(agent) > 0 and name not in served
    ]


def capacity_shortage(beating: Sequence[FleetWorker], agents: Mapping[str, FleetAgent]) -> list[FleetReason]:
    waiting_total = sum(waiting(agent) for agent in agents.values())
    if not waiting_total:
        return []
    live = [worker for worker in beating if worker.state is WorkerState.LIVE]
    if not live:
        detail = f"{waiting_total} dispatch(es) wait, and every worker is draining"
        return [FleetReason(code="all_draining", detail=detail)]
    if all(worker.busy >= worker.slots for worker in live):
        slots = sum(worker.slots for worker in live)
        detail = (
            f"{waiting_total} dispatch(es) wait, and all {slots} slots of the {len(live)} live worker(s) "
            "are busy"
        )
        return [FleetReason(code="slots_full", detail=detail)]
    return []
