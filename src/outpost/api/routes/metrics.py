"""`GET /metrics`: Prometheus counters of settled dispatches, tokens and cost, and the fleet's gauges."""

from __future__ import annotations

from contextlib import suppress

from fastapi import APIRouter, Response

from outpost.api.auth import ContainerDep
from outpost.errors import StoreUnavailable
from outpost.services.fleet_metrics import render_fleet

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response)
async def metrics(container: ContainerDep) -> Response:
    """The counters in Prometheus' text format. Unauthenticated, like the health checks, so that a
    scraper needs no API key: the counters are labelled by tenant id, agent and model, and hold no
    secret, but they show every tenant's spending, so expose this path only where the operator's
    scraper can reach it (a reverse proxy in front of Outpost should not route it publicly)."""
    body, content_type = container.ledger.metrics.render()
    # The fleet's gauges come from the store (the cached fleet report): the same on every server. While
    # the database cannot be read they are left out, and this server's own counters are still served.
    with suppress(StoreUnavailable):
        body += render_fleet(await container.fleet.report())
    return Response(body, media_type=content_type)
