"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from outpost.api.auth import ContainerDep
from outpost.api.problems import problem
from outpost.errors import OutpostError

router = APIRouter(prefix="/health", tags=["health"])


@router.get("/live")
async def live() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready", response_model=None)
async def ready(container: ContainerDep) -> dict[str, Any] | Response:
    checks: dict[str, str] = {}
    try:
        await container.store.ping()
        checks["store"] = "ok"
    except OutpostError as exc:
        checks["store"] = exc.detail
    if container.settings.worker.enabled:
        checks["worker"] = "ok" if container.worker.is_healthy() else "the in-process worker is not running"
    problems = container.sandbox.problems()
    checks["sandbox"] = "; ".join(problems) or "ok"
    sandbox = {"backend": container.sandbox.name, "isolated": container.sandbox.isolated}
    if not container.sandbox.isolated:
        sandbox["warning"] = "INSECURE: dispatch commands are not isolated from this host"
    failing = {name: state for name, state in checks.items() if state != "ok"}
    if failing:
        detail = "; ".join(f"{name}: {state}" for name, state in failing.items())
        return problem(503, "not-ready", detail, checks=checks, sandbox=sandbox)
    return {"status": "ok", "checks": checks, "sandbox": sandbox}
