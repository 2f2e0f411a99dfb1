"""Builds the FastAPI application around a container."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig
from starlette.routing import Route

from outpost import __version__
from outpost.api.auth import TokenBuckets
from outpost.api.body_limit import BodyLimitMiddleware
from outpost.api.problems import install_problem_handlers
from outpost.api.routes import (
    artifacts,
    audit,
    dispatches,
    events,
    git_credentials,
    health,
    keys,
    metrics,
    providers,
    usage,
    workspaces,
)
from outpost.app import Container
from outpost.mcp.http import McpEndpoint


def create_app(container: Container) -> FastAPI:
    """The ASGI app. Its lifespan starts and stops the container (store, worker) and the MCP endpoint."""
    mcp_endpoint = McpEndpoint(container.settings.limits.max_body_bytes)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await container.start()
        try:
            async with mcp_endpoint.running():
                yield
        finally:
            await container.stop()

    # FastAPI's built-in OpenTelemetry layer costs a large share of each request; Outpost exports its own
    # metrics instead.
    telemetry_off: TelemetryConfig = {
        "tracing": False, "metrics": False, "logs": False, "operation_spans": False,
    }  # fmt: skip
    app = FastAPI(title="Outpost", version=__version__, lifespan=lifespan, telemetry=telemetry_off)
    app.state.container = container
    limits = container.settings.limits
    app.state.rate_limits = TokenBuckets(limits.requests_per_s, limits.requests_burst)
    install_problem_handlers(app)
    app.include_router(dispatches.router)
    app.include_router(events.router)
    app.include_router(artifacts.router)
    app.include_router(workspaces.router)
    app.include_router(keys.router)
    app.include_router(providers.router)
    app.include_router(git_credentials.router)
    app.include_router(health.router)
    app.include_router(audit.router)
    app.include_router(usage.router)
    app.include_router(metrics.router)
    app.router.routes.append(Route("/mcp", mcp_endpoint))  # an ASGI app: every method, this path only
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=container.settings.limits.max_body_bytes)
    return app
