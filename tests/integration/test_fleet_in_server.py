"""`outpost serve` with the procrastinate queue: API only by default; with OUTPOST_WORKER__ENABLED=true it
also runs a fleet worker in-process, registered in the fleet like any `outpost worker`."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import text

from outpost.db.repositories import workers as worker_repo
from outpost.db.types import utc_now
from tests.conftest import MakeServer, Server
from tests.integration.helpers import TERMINAL, submit, wait_for_status

pytestmark = pytest.mark.postgres


@pytest.fixture
def database_url(pg_database: str) -> str:
    """This backend needs PostgreSQL: no SQLite run."""
    return pg_database


async def test_an_api_only_server_queues_dispatches_for_workers_and_runs_none(
    make_server: MakeServer,
) -> None:
    server = await make_server(worker={"enabled": False}, limits={"requests_per_s": 0})
    tenant = await server.new_tenant()
    created = await submit(server.client, tenant, "echo never here")
    await asyncio.sleep(0.5)
    shown = await server.client.get(f"/v1/dispatches/{created['id']}", headers=tenant)
    assert shown.json()["status"] == "queued"
    assert await _job_statuses(server, created["id"]) == ["todo"]
    cancelled = await server.client.post(f"/v1/dispatches/{created['id']}/cancel", headers=tenant)
    assert cancelled.json()["status"] == "cancelled"
    assert await _job_statuses(server, created["id"]) == []  # its waiting job went with it


async def _job_statuses(server: Server, dispatch_id: str) -> list[str]:
    query = text("SELECT status::text FROM procrastinate_jobs WHERE queueing_lock = :id ORDER BY id")
    async with server.container.store.read() as conn:
        return [str(status) for status in (await conn.execute(query, {"id": dispatch_id})).scalars()]


async def test_a_server_told_to_run_a_worker_runs_the_dispatches_it_queues(make_server: MakeServer) -> None:
    worker = {"queue": "procrastinate", "enabled": True, "agents": ["shell"], "heartbeat_s": 0.2}
    server = await make_server(worker=worker, limits={"requests_per_s": 0})
    tenant = await server.new_tenant()
    created = await submit(server.client, tenant, "echo run in the server")
    done = await wait_for_status(server.client, tenant, created["id"], TERMINAL)
    assert (done["status"], done["result"]) == ("succeeded", "run in the server")
    async with server.container.store.read() as conn:
        [me] = await worker_repo.list_workers(conn, seen_since=utc_now() - timedelta(hours=1))
    assert me.id == server.container.presence.id
    assert me.agents == ["shell"]  # what it offers, as set
    assert server.container.worker.is_healthy()
