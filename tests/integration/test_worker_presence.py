"""The embedded worker's entry in the fleet: registered at start, kept alive by its heartbeat (with how
busy it is), stopped at a clean exit, and retired by the next start after a crash."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from outpost.db.repositories import workers as worker_repo
from outpost.db.store import Store
from outpost.db.types import utc_now
from outpost.worker.presence import WorkerPresence
from tests.conftest import MakeServer


async def fleet(store: Store) -> list[worker_repo.WorkerRow]:
    async with store.read() as conn:
        return await worker_repo.list_workers(conn, seen_since=utc_now() - timedelta(hours=1))


async def test_the_embedded_worker_registers_beats_and_stops(
    make_server: MakeServer, database_url: str
) -> None:
    server = await make_server(worker={"heartbeat_s": 0.05, "slots": 3}, limits={"requests_per_s": 0})
    [me] = await fleet(server.container.store)
    assert (me.id, me.slots, me.busy, me.draining, me.stopped_at) == (
        server.container.presence.id,
        3,
        0,
        False,
        None,
    )
    assert "shell" in me.agents
    await asyncio.sleep(0.3)
    [later] = await fleet(server.container.store)
    assert later.heartbeat_at > me.heartbeat_at
    await server.container.presence.stop()  # as the server's stop does
    [gone] = await fleet(server.container.store)
    assert gone.stopped_at is not None


async def test_a_worker_taken_for_dead_learns_it_at_its_next_beat(make_server: MakeServer) -> None:
    server = await make_server(worker={"enabled": False}, limits={"requests_per_s": 0})
    store = server.container.store
    presence = WorkerPresence(store, slots=1, agents=["shell"], heartbeat_s=0.05, busy=lambda: 1)
    await presence.start()
    try:
        async with store.write() as conn:
            await worker_repo.mark_stopped(conn, [presence.id], utc_now())
        await asyncio.sleep(0.3)
        assert presence.taken_for_dead
    finally:
        await presence.stop()


async def test_a_start_after_a_crash_retires_the_workers_of_earlier_starts(make_server: MakeServer) -> None:
    """The embedded system's queue (`rows`): its server is the only worker. (Fleet workers are not retired
    by a start: they are taken for dead when they stop beating; see test_fleet_runs.py.)"""
    first = await make_server(worker={"enabled": False}, limits={"requests_per_s": 0})
    crashed = WorkerPresence(first.container.store, slots=1, agents=["shell"], heartbeat_s=60, busy=lambda: 0)
    await crashed.start()  # and never stops: as if killed
    second = await make_server(worker={"queue": "rows"}, limits={"requests_per_s": 0})
    rows = {row.id: row for row in await fleet(second.container.store)}
    assert rows[crashed.id].stopped_at is not None
    assert rows[second.container.presence.id].stopped_at is None
