"""The queue backend the settings choose (`worker.queue`), and the agents this process's worker offers.

The procrastinate backend and its library are imported only when chosen: procrastinate alone takes
most of a second to import.
"""

from __future__ import annotations

from outpost.agents.registry import AgentRegistry
from outpost.agents.status import agent_statuses, configured_providers
from outpost.db.store import Store, dialect_of, normalize_database_url
from outpost.errors import InvalidInput
from outpost.services.fleet_runs import FleetRuns
from outpost.services.runs import RunService
from outpost.settings import Settings
from outpost.worker.executor import DispatchExecutor
from outpost.worker.presence import WorkerPresence
from outpost.worker.queue.base import QueueBackend
from outpost.worker.queue.inprocess import InProcessWorker


def advertised_agents(settings: Settings, registry: AgentRegistry) -> list[str]:
    """The agents this process's worker takes dispatches of. The embedded worker: every agent (a
    dispatch for one whose CLI is missing fails, saying so). A fleet worker: those set in
    `worker.agents`, else those whose CLI is ready on this machine."""
    if settings.worker.queue == "rows":
        return [str(name) for name in registry.names()]
    if settings.worker.agents is not None:
        return list(settings.worker.agents)
    statuses = agent_statuses(settings.agents.install_dir, configured_providers(settings.providers))
    return [status.agent for status in statuses if status.ready]


def check_queue_database(settings: Settings) -> None:
    """Raises InvalidInput when the procrastinate backend is chosen on a database other than
    PostgreSQL (checked before anything is written to it)."""
    url = normalize_database_url(settings.resolved_database_url)
    if settings.worker.queue == "procrastinate" and dialect_of(url) != "postgresql":
        raise InvalidInput(
            "OUTPOST_WORKER__QUEUE=procrastinate needs PostgreSQL: set OUTPOST_DATABASE_URL to a "
            "postgresql:// URL, or set OUTPOST_WORKER__QUEUE=rows"
        )


def build_queue(
    settings: Settings,
    store: Store,
    runs: RunService,
    fleet_runs: FleetRuns,
    executor: DispatchExecutor,
    presence: WorkerPresence,
    agents: list[str],
) -> QueueBackend:
    """Raises InvalidInput when the procrastinate backend is chosen on a database other than
    PostgreSQL, or for a fleet worker that would offer no agent."""
    worker = settings.worker
    if worker.queue == "rows":
        return InProcessWorker(runs, executor, worker.slots, worker.poll_interval_s)
    check_queue_database(settings)
    from outpost.worker.queue.procrastinate_queue import (  # noqa: PLC0415 - loads only when chosen
        ProcrastinateQueue,
        build_app,
    )

    app = build_app(store.url)
    if not worker.enabled:
        return ProcrastinateQueue(store, app, fleet_runs)
    if not agents:
        raise InvalidInput(
            "this worker has no agent to offer: none is ready here (see `outpost agents`); name some with "
            "--agents or OUTPOST_WORKER__AGENTS"
        )
    from outpost.worker.fleet_worker import FleetWorker  # noqa: PLC0415 - loads only when chosen

    fleet = FleetWorker(app, fleet_runs, executor, presence, worker, agents)
    return ProcrastinateQueue(store, app, fleet_runs, fleet)
