"""Liveness, readiness and the fleet's health."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from outpost.agents.status import AgentStatus
from outpost.api.auth import ContainerDep
from outpost.api.problems import problem
from outpost.app import Container
from outpost.errors import OutpostError, Unavailable
from outpost.schemas.fleet import FleetHealth, FleetStatus
from outpost.services.retention import StorageStatus
from outpost.storage.disk_guard import format_bytes

router = APIRouter(prefix="/health", tags=["health"])


@router.get("/live")
async def live() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready", response_model=None)
async def ready(container: ContainerDep) -> dict[str, Any] | Response:
    """Not ready when the store, the worker or (with a worker) the sandbox is failing, or free disk space
    is below the reserve. `agents` only informs: a server without some agent CLI still serves the others
    (one with only `shell` is fine); so does `storage.over_cap`, which the next retention sweep deals
    with."""
    checks = await _checks(container)
    storage = _storage(container, checks)
    sandbox = {"backend": container.sandbox.name, "isolated": container.sandbox.isolated}
    if not container.sandbox.isolated:
        sandbox["warning"] = "INSECURE: dispatch commands are not isolated from this host"
    agents = {status.agent: _agent(status) for status in await container.agent_statuses.statuses()}
    failing = {name: state for name, state in checks.items() if state != "ok"}
    if failing:
        detail = "; ".join(f"{name}: {state}" for name, state in failing.items())
        return problem(
            503, "not-ready", detail, checks=checks, sandbox=sandbox, agents=agents, storage=storage
        )
    return {"status": "ok", "checks": checks, "sandbox": sandbox, "agents": agents, "storage": storage}


@router.get("/fleet", response_model=FleetHealth, responses={503: {"model": FleetHealth}})
async def fleet(container: ContainerDep) -> Response:
    """The workers, each agent's queue and last hour, and the fleet's status with its reasons: 200 when
    healthy or degraded, 503 (same body) when unhealthy. Figures per agent and per worker, never per
    tenant; computed at most every `OUTPOST_FLEET__CACHE_S` (`as_of`)."""
    report = await container.fleet.report()
    status_code = 503 if report.status is FleetStatus.UNHEALTHY else 200
    return Response(report.model_dump_json(), status_code=status_code, media_type="application/json")


async def _checks(container: Container) -> dict[str, str]:
    checks: dict[str, str] = {}
    try:
        await container.store.ping()
        checks["store"] = "ok"
    except OutpostError as exc:
        checks["store"] = exc.detail
    if container.settings.worker.enabled:
        checks["worker"] = "ok" if container.worker.is_healthy() else "the in-process worker is not running"
        # Only where runs are: a server that only serves the API needs no sandbox.
        checks["sandbox"] = "; ".join(container.sandbox.problems()) or "ok"
    return checks


def _storage(container: Container, checks: dict[str, str]) -> dict[str, Any] | None:
    """The data dir's space; sets `checks["storage"]`, which fails when free space is below the reserve."""
    try:
        status = container.janitor.status()
    except Unavailable as exc:
        checks["storage"] = exc.detail
        return None
    disk = status.disk
    checks["storage"] = (
        f"only {format_bytes(disk.free_bytes)} free on the data dir's file system, below the reserve of "
        f"{format_bytes(disk.reserve_bytes)}: writes are refused until space is freed"
        if disk.low
        else "ok"
    )
    return _storage_section(status)


def _storage_section(status: StorageStatus) -> dict[str, Any]:
    last = status.last_sweep
    return {
        "usage_bytes": status.usage_bytes, "cap_bytes": status.cap_bytes,
        "free_bytes": status.disk.free_bytes, "reserve_bytes": status.disk.reserve_bytes,
        "low_space": status.disk.low, "over_cap": status.over_cap,
        "last_sweep": None if last is None else {
            "finished_at": last.finished_at.isoformat(), "artifacts_expired": last.artifacts_expired,
            "events_deleted": last.events_deleted, "artifacts_evicted": last.artifacts_evicted,
            "bytes_evicted": last.bytes_evicted,
        },
    }  # fmt: skip


def _agent(status: AgentStatus) -> dict[str, Any]:
    """`outpost agents --json`'s facts but the executable's host path, which a probe has no use for."""
    row = status.as_dict()
    del row["agent"], row["executable"]
    return row
