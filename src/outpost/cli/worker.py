"""`outpost worker`: a fleet worker process, which runs dispatches queued through procrastinate."""

from __future__ import annotations

import asyncio
import signal

import click

from outpost.app import Container, build_container
from outpost.cli.offline import load_settings
from outpost.domain.dispatch import AgentName
from outpost.errors import InvalidInput, Unavailable
from outpost.logs import configure_logging
from outpost.secrets.startup import check_master_keys
from outpost.settings import Settings, WorkerSettings
from outpost.worker.fleet_worker import FleetWorker
from outpost.worker.queue.factory import check_queue_database
from outpost.worker.queue.procrastinate_queue import ProcrastinateQueue


@click.command()
@click.option("--slots", type=click.IntRange(1, 1024), help="Dispatches run at once (OUTPOST_WORKER__SLOTS).")
@click.option(
    "--agents", metavar="A,B", help="The agents to take dispatches of (default: those ready on this machine)."
)
@click.option(
    "--drain-timeout", type=click.FloatRange(min=0), metavar="SECONDS",
    help="On SIGTERM, how long runs may finish before the rest are handed back (default 300).",
)  # fmt: skip
def worker(slots: int | None, agents: str | None, drain_timeout: float | None) -> None:
    """Run dispatches on this machine, taken from the queue the API servers write (procrastinate on the
    PostgreSQL database in OUTPOST_DATABASE_URL), until SIGTERM or SIGINT.

    On SIGTERM or SIGINT the worker takes no new dispatch, lets those it runs finish for up to the drain
    timeout, kills the rest and queues them again for other workers, and exits 0. Each worker needs a
    data dir of its own (OUTPOST_DATA_DIR) and the master key the servers use.
    """
    settings = fleet_settings(load_settings(), slots=slots, agents=agents, drain_timeout_s=drain_timeout)
    check_queue_database(settings)
    configure_logging(settings.log_level)
    asyncio.run(check_master_keys(settings))  # one clear line for a wrong key, before anything is built
    container = build_container(settings)
    container.check_sandbox()
    asyncio.run(run_until_signalled(container))


def fleet_settings(
    settings: Settings, *, slots: int | None, agents: str | None, drain_timeout_s: float | None
) -> Settings:
    """The settings with the procrastinate queue and a worker that runs, and the options given. Raises
    InvalidInput for an unknown agent name."""
    worker: dict[str, object] = {"queue": "procrastinate", "enabled": True}
    if slots is not None:
        worker["slots"] = slots
    if drain_timeout_s is not None:
        worker["drain_timeout_s"] = drain_timeout_s
    if agents is not None:
        worker["agents"] = parse_agents(agents)
    merged = WorkerSettings.model_validate({**settings.worker.model_dump(), **worker})
    return settings.model_copy(update={"worker": merged})


def parse_agents(listed: str) -> list[AgentName]:
    names = [name.strip() for name in listed.split(",") if name.strip()]
    known = {agent.value for agent in AgentName}
    for name in names:
        if name not in known:
            raise InvalidInput(f"--agents: unknown agent {name!r} (known: {', '.join(sorted(known))})")
    if not names:
        raise InvalidInput("--agents: name at least one agent")
    return [AgentName(name) for name in names]


async def run_until_signalled(container: Container) -> None:
    """Start the worker, wait for SIGTERM or SIGINT, drain it, stop. Raises Unavailable when the worker
    stopped on its own (taken for dead by the fleet, or its queue connection failed)."""
    fleet = _fleet_of(container)
    await container.start()
    try:
        signalled = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, signalled.set)
        waits = {asyncio.ensure_future(signalled.wait()), asyncio.ensure_future(fleet.ended.wait())}
        _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for waiting in pending:
            waiting.cancel()
        # Before the container stops: the runs' events still reach the API servers while they finish.
        await fleet.drain(0 if fleet.ended.is_set() else container.settings.worker.drain_timeout_s)
    finally:
        await container.stop()
    if fleet.end_reason is not None:
        raise Unavailable(f"the worker stopped: {fleet.end_reason}")


def _fleet_of(container: Container) -> FleetWorker:
    queue = container.worker
    if not isinstance(queue, ProcrastinateQueue) or queue.fleet is None:
        raise TypeError("outpost worker runs the procrastinate queue backend with a worker")
    return queue.fleet
