"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from outpost.agents.status import AgentStatus
from outpost.api.auth import ContainerDep
from outpost.api.problems import problem
from outpost.app import Container
from outpost.errors import OutpostError

router = APIRouter(prefix="/health", tags=["health"])


@router.get("/live")
async def live() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready", response_model=None)
async def ready(container: ContainerDep) -> dict[str, Any] | Response:
    """Not ready when the store, the worker or the sandbox is failing. `agents` only informs: a server
    without some agent CLI still serves the others (one with only `shell` is fine)."""
    checks = await _checks(container)
    sandbox = {"backend": container.sandbox.name, "isolated": container.sandbox.isolated}
    if not container.sandbox.isolated:
        sandbox["warning"] = "INSECURE: dispatch commands are not isolated from this host"
    agents = {status.agent: _agent(status) for status in await container.agent_statuses.statuses()}
    failing = {name: state for name, state in checks.items() if state != "ok"}
    if failing:
        detail = "; ".join(f"{name}: {state}" for name, state in failing.items())
        return problem(503, "not-ready", detail, checks=checks, sandbox=sandbox, agents=agents)
    return {"status": "ok", "checks": checks, "sandbox": sandbox, "agents": agents}


async def _checks(container: Container) -> dict[str, str]:
    checks: dict[str, str] = {}
    try:
        await container.store.ping()
        checks["store"] = "ok"
    except OutpostError as exc:
        checks["store"] = exc.detail
    if container.settings.worker.enabled:
        checks["worker"] = "ok" if container.worker.is_healthy() else "the in-process worker is not running"
    checks["sandbox"] = "; ".join(container.sandbox.problems()) or "ok"
    return checks


def _agent(status: AgentStatus) -> dict[str, Any]:
    """`outpost agents --json`'s facts but the executable's host path, which a probe has no use for."""
    row = status.as_dict()
    del row["agent"], row["executable"]
    return row
