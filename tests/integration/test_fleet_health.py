"""`GET /health/fleet` and the fleet's series in `/metrics`, on SQLite and PostgreSQL: workers registered
in the store, dispatches submitted through the API, run by the embedded worker, or stored as a fleet's
history would leave them."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from outpost.db.repositories import dispatches as dispatch_repo
from outpost.db.repositories import workers as worker_repo
from outpost.db.repositories.dispatches import DispatchRow
from outpost.db.repositories.workers import WorkerRow
from outpost.db.store import Connection, Store
from outpost.db.types import utc_now
from outpost.domain.ids import new_ulid
from outpost.services.fleet import FleetService
from outpost.services.fleet_settings import FleetSettings
from tests.conftest import MakeServer, Server
from tests.integration.helpers import submit, wait_for_status

NO_WORKER = {"worker": {"enabled": False}, "limits": {"requests_per_s": 0}, "fleet": {"cache_s": 0}}


async def register(store: Store, worker_id: str, *, beat_s_ago: float = 0.0, **fields: Any) -> None:
    now = utc_now()
    values: dict[str, Any] = {
        "id": worker_id, "host": "box-1", "pid": 4242, "version": "0.1.0", "slots": 4, "busy": 0,
        "agents": ["shell"], "draining": False, "started_at": now - timedelta(hours=2),
        "heartbeat_at": now - timedelta(seconds=beat_s_ago),
    }  # fmt: skip
    async with store.write() as conn:
        await worker_repo.register(conn, WorkerRow(**{**values, **fields}))


async def store_dispatches(server: Server, *rows: DispatchRow) -> None:
    async with server.container.store.write() as conn:
        for row in rows:
            await dispatch_repo.insert_dispatch(conn, row)


def dispatch(
    tenant_id: str, status: str, *, created: datetime, ran_s: float | None = None, **fields: Any
) -> DispatchRow:
    """A dispatch row as the lifecycle leaves it; `ran_s`: it started at `created` and ran that long."""
    finished = created + timedelta(seconds=ran_s) if ran_s is not None else None
    values: dict[str, Any] = {
        "id": new_ulid(), "tenant_id": tenant_id, "status": status, "version": 4, "attempt": 1,
        "event_seq": 4, "agent": "shell", "task": "true", "tier": "balanced", "model": None, "timeout_s": 600,
        "env": {}, "labels": {}, "max_cost_micro_usd": None, "limits": None, "egress_allow": None,
        "idempotency_key": None, "request_sha256": None, "created_at": created,
        "started_at": created if ran_s is not None else None, "finished_at": finished, "exit_code": None,
        "result": None, "failure_reason": None, "failure_detail": None, "input_tokens": 0,
        "output_tokens": 0, "cache_read_tokens": 0, "cache_write_tokens": 0, "cost_micro_usd": 0,
    }  # fmt: skip
    return DispatchRow(**{**values, **fields})


async def tenant_id_of(server: Server) -> str:
    tenant, _ = await server.container.keys.create_tenant(f"t{new_ulid()[-8:]}", admin=False)
    return tenant.id


async def test_the_report_lists_the_workers_and_each_agents_queue_and_last_hour(
    make_server: MakeServer,
) -> None:
    server = await make_server(**NO_WORKER)
    store = server.container.store
    await register(store, "live-1", slots=4, busy=3, agents=["shell", "claude"])
    await register(store, "draining-1", draining=True)
    await register(store, "silent-1", beat_s_ago=120)
    await register(store, "stopped-1", beat_s_ago=600, stopped_at=utc_now() - timedelta(seconds=600))
    await register(store, "long-gone", beat_s_ago=7200, stopped_at=utc_now() - timedelta(seconds=7200))
    headers = await server.new_tenant()
    await submit(server.client, headers, "echo waiting")  # no worker here: it stays queued
    tenant_id = await tenant_id_of(server)
    now = utc_now()
    await store_dispatches(
        server,
        *(
            dispatch(tenant_id, "succeeded", created=now - timedelta(minutes=30), ran_s=s)
            for s in (10, 20, 30)
        ),
        dispatch(tenant_id, "failed", created=now - timedelta(minutes=20), ran_s=40, failure_reason="oom"),
        dispatch(
            tenant_id, "timed_out", created=now - timedelta(minutes=15), ran_s=50, failure_reason="timed_out"
        ),
        dispatch(tenant_id, "cancelled", created=now - timedelta(minutes=5), finished_at=now),  # while queued
        dispatch(tenant_id, "succeeded", created=now - timedelta(hours=3), ran_s=60),  # before the window
        dispatch(tenant_id, "running", created=now - timedelta(minutes=1), started_at=now, agent="claude"),
        dispatch(tenant_id, "queued", created=now - timedelta(hours=2), queue_reason="tenant at its cap"),
    )
    response = await server.client.get("/health/fleet")  # no key, like the other health checks
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["status"], [reason["code"] for reason in body["reasons"]]) == ("degraded", ["worker_silent"])
    assert "silent-1 on box-1" in body["reasons"][0]["detail"]
    assert body["window_s"] == 3600
    assert datetime.fromisoformat(body["as_of"]) >= now
    workers = {worker["id"]: worker for worker in body["workers"]}
    assert {name: worker["state"] for name, worker in workers.items()} == {
        "live-1": "live", "draining-1": "draining", "silent-1": "silent", "stopped-1": "stopped",
    }  # fmt: skip
    live = workers["live-1"]
    assert (live["slots"], live["busy"], live["agents"], live["version"]) == (
        4,
        3,
        ["claude", "shell"],
        "0.1.0",
    )
    assert live["heartbeat_age_s"] < 30
    assert datetime.fromisoformat(live["last_heartbeat_at"]) <= datetime.fromisoformat(body["as_of"])
    assert body["capacity"] == {"workers": 1, "slots": 4, "busy": 3}
    shell = body["agents"]["shell"]
    assert {key: shell[key] for key in ("queued", "held", "running", "succeeded", "failed", "cancelled")} == {
        "queued": 2, "held": 1, "running": 0, "succeeded": 3, "failed": 2, "cancelled": 1,
    }  # fmt: skip
    assert shell["failures"] == {"oom": 1, "timed_out": 1}
    assert shell["success_rate"] == 0.6
    assert shell["duration_s"] == {"p50": 30.0, "p90": 46.0, "p99": 49.6}
    assert 0 <= shell["oldest_queued_age_s"] < 60  # the submitted one; the held one waits by policy
    assert (body["agents"]["claude"]["running"], body["agents"]["claude"]["duration_s"]) == (1, None)


async def test_no_live_worker_makes_the_fleet_unhealthy_with_503(make_server: MakeServer) -> None:
    server = await make_server(**NO_WORKER)
    await register(server.container.store, "silent-1", beat_s_ago=45)
    await submit(server.client, await server.new_tenant(), "echo stuck")
    response = await server.client.get("/health/fleet")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["status"] == "unhealthy"
    assert [reason["code"] for reason in body["reasons"]] == ["no_live_worker", "worker_silent"]
    assert body["reasons"][0]["detail"].endswith("nothing runs dispatches (1 queued)")
    assert body["agents"]["shell"]["queued"] == 1


async def test_a_worker_is_taken_for_lost_after_the_workers_own_stale_time(make_server: MakeServer) -> None:
    """One setting says when a worker is lost: the one after which its dispatches are handed on."""
    server = await make_server(**{**NO_WORKER, "worker": {"enabled": False, "stale_s": 60}})
    await register(server.container.store, "quiet-1", beat_s_ago=45)
    await register(server.container.store, "gone-1", beat_s_ago=75)
    body = (await server.client.get("/health/fleet")).json()
    assert {worker["id"]: worker["state"] for worker in body["workers"]} == {
        "quiet-1": "live",
        "gone-1": "silent",
    }
    assert "silent for over 60 s" in body["reasons"][0]["detail"]


async def test_the_embedded_worker_is_live_and_its_runs_are_counted(make_server: MakeServer) -> None:
    server = await make_server(worker={"slots": 3}, limits={"requests_per_s": 0}, fleet={"cache_s": 0})
    headers = await server.new_tenant()
    ok = await submit(server.client, headers, "true")
    bad = await submit(server.client, headers, "exit 3")
    await wait_for_status(server.client, headers, ok["id"], {"succeeded"})
    failed = await wait_for_status(server.client, headers, bad["id"], {"failed"})
    response = await server.client.get("/health/fleet")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "healthy"
    [me] = body["workers"]
    assert (me["id"], me["state"], me["slots"]) == (server.container.presence.id, "live", 3)
    shell = body["agents"]["shell"]
    assert (shell["succeeded"], shell["failed"], shell["success_rate"]) == (1, 1, 0.5)
    assert shell["failures"] == {failed["failure"]["reason"]: 1}
    assert 0 <= shell["duration_s"]["p50"] <= shell["duration_s"]["p99"] < 60


async def test_a_report_is_served_for_cache_s_and_computed_once_for_concurrent_callers(
    make_server: MakeServer,
) -> None:
    server = await make_server(**NO_WORKER)
    store = server.container.store
    ticks = [0.0]
    computations = itertools.count()

    def clock() -> datetime:
        next(computations)
        return utc_now()

    fleet = FleetService(store, FleetSettings(cache_s=1.0), clock=clock, monotonic=lambda: ticks[0])
    reports = await asyncio.gather(*(fleet.report() for _ in range(5)))
    assert next(computations) == 1
    assert all(report is reports[0] for report in reports)
    await register(store, "late-1")
    ticks[0] = 0.99
    assert (await fleet.report()).workers == []
    ticks[0] = 1.0
    fresh = await fleet.report()
    assert [worker.id for worker in fresh.workers] == ["late-1"]
    assert fresh.as_of > reports[0].as_of


class GatedStore:
    """A store whose reads wait until the test opens the gate."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.dialect = store.dialect
        self.gate = asyncio.Event()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Connection]:
        await self.gate.wait()
        async with self.store.read() as conn:
            yield conn


async def test_callers_during_a_computation_get_the_previous_report_without_waiting(
    make_server: MakeServer,
) -> None:
    server = await make_server(**NO_WORKER)
    gated = GatedStore(server.container.store)
    ticks = [0.0]
    fleet = FleetService(gated, FleetSettings(cache_s=1.0), monotonic=lambda: ticks[0])  # type: ignore[arg-type]
    gated.gate.set()
    first = await fleet.report()
    await register(server.container.store, "late-1")
    ticks[0] = 5.0
    gated.gate.clear()
    computing = asyncio.create_task(fleet.report())
    await asyncio.sleep(0)  # it holds the lock now, and waits for the store
    assert await asyncio.wait_for(fleet.report(), 1) is first
    gated.gate.set()
    assert [worker.id for worker in (await computing).workers] == ["late-1"]


async def test_later_reports_add_what_finished_since_even_if_committed_late_and_drop_what_left_the_window(
    make_server: MakeServer,
) -> None:
    server = await make_server(**NO_WORKER)
    tenant_id = await tenant_id_of(server)
    now = [utc_now()]
    fleet = FleetService(server.container.store, FleetSettings(cache_s=0), clock=lambda: now[0])
    await store_dispatches(
        server, dispatch(tenant_id, "succeeded", created=now[0] - timedelta(minutes=50), ran_s=60)
    )
    first = (await fleet.report()).agents["shell"]
    assert (first.succeeded, first.failed) == (1, 0)
    # Stamped 30 s before that report read the store, committed after it (a slow transaction).
    late = dispatch(
        tenant_id, "failed", created=now[0] - timedelta(seconds=40), ran_s=10, failure_reason="oom"
    )
    await store_dispatches(server, late)
    now[0] += timedelta(seconds=5)
    second = (await fleet.report()).agents["shell"]
    assert (second.succeeded, second.failed, second.failures) == (1, 1, {"oom": 1})
    now[0] += timedelta(minutes=15)  # the first one finished over an hour ago now
    third = (await fleet.report()).agents["shell"]
    assert (third.succeeded, third.failed, third.success_rate) == (0, 1, 0.0)
    assert third.duration_s is not None
    assert third.duration_s.p50 == 10.0


def series(text: str) -> dict[str, float]:
    """`name{labels}` → value of every sample in a Prometheus text exposition."""
    samples = (line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return {name: float(value) for name, value in samples}


def timeless(found: dict[str, float]) -> dict[str, float]:
    """The samples that do not move with the clock (ages and timestamps do)."""
    moving = ("outpost_fleet_report_timestamp_seconds", "outpost_queue_oldest_age_seconds")
    return {name: value for name, value in found.items() if not name.startswith(moving)}


async def test_metrics_export_the_fleet_gauges_the_same_on_every_server(make_server: MakeServer) -> None:
    first = await make_server(**NO_WORKER)
    second = await make_server(**NO_WORKER)  # another API server on the same database
    store = first.container.store
    await register(store, "live-1", slots=4, busy=1, agents=["shell", "claude"])
    await register(store, "live-2", slots=2, busy=2)
    await register(store, "silent-1", beat_s_ago=300)
    headers = await first.new_tenant()
    for _ in range(3):
        await submit(first.client, headers, "echo queued")
    tenant_id = await tenant_id_of(first)
    now = utc_now()
    failed = dispatch(tenant_id, "failed", created=now - timedelta(minutes=9), ran_s=8, failure_reason="oom")
    await store_dispatches(
        first, failed, replace(failed, id=new_ulid(), status="succeeded", failure_reason=None)
    )
    texts = [(await server.client.get("/metrics")).text for server in (first, second)]
    found = series(texts[0])
    assert timeless(found) == timeless(series(texts[1]))
    assert found['outpost_fleet_status{status="degraded"}'] == 1.0
    assert found['outpost_fleet_status{status="healthy"}'] == 0.0
    assert found['outpost_fleet_problems{code="worker_silent"}'] == 1.0
    assert found['outpost_workers{state="live"}'] == 2.0
    assert found['outpost_workers{state="silent"}'] == 1.0
    assert found['outpost_worker_slots{state="live"}'] == 6.0
    assert found['outpost_worker_busy_slots{state="live"}'] == 3.0
    assert found['outpost_queue_depth{agent="shell"}'] == 3.0
    assert found['outpost_queue_depth{agent="claude"}'] == 0.0
    assert 0 <= found['outpost_queue_oldest_age_seconds{agent="shell"}'] < 60
    assert found['outpost_dispatches_last_hour{agent="shell",outcome="failed"}'] == 1.0
    assert found['outpost_dispatch_failures_last_hour{agent="shell",reason="oom"}'] == 1.0
    assert found['outpost_dispatch_success_ratio_last_hour{agent="shell"}'] == 0.5
    assert found['outpost_dispatch_duration_last_hour_seconds{agent="shell",quantile="0.99"}'] == 8.0
    assert abs(found["outpost_fleet_report_timestamp_seconds"] - now.timestamp()) < 60


async def test_metrics_count_each_settled_dispatch_with_its_duration_and_failure_reason(
    make_server: MakeServer,
) -> None:
    server = await make_server(limits={"requests_per_s": 0}, fleet={"cache_s": 0})
    headers = await server.new_tenant()
    ok = await submit(server.client, headers, "true")
    bad = await submit(server.client, headers, "exit 3")
    slow = await submit(server.client, headers, "sleep 30")
    await wait_for_status(server.client, headers, ok["id"], {"succeeded"})
    reason = (await wait_for_status(server.client, headers, bad["id"], {"failed"}))["failure"]["reason"]
    await wait_for_status(server.client, headers, slow["id"], {"running"})
    running = series((await server.client.get("/metrics")).text)
    assert running['outpost_dispatches_running{agent="shell"}'] == 1.0
    assert running['outpost_workers{state="live"}'] == 1.0
    await server.client.post(f"/v1/dispatches/{slow['id']}/cancel", headers=headers)
    found = series((await server.client.get("/metrics")).text)
    assert found['outpost_dispatches_finished_total{agent="shell",status="succeeded"}'] == 1.0
    assert found['outpost_dispatches_finished_total{agent="shell",status="failed"}'] == 1.0
    assert found['outpost_dispatches_finished_total{agent="shell",status="cancelled"}'] == 1.0
    assert found[f'outpost_dispatch_failures_total{{agent="shell",reason="{reason}"}}'] == 1.0
    assert found['outpost_dispatch_duration_seconds_count{agent="shell"}'] == 2.0  # not the cancelled one
    assert found['outpost_dispatch_duration_seconds_bucket{agent="shell",le="60.0"}'] == 2.0
    assert found['outpost_dispatches_running{agent="shell"}'] == 0.0
