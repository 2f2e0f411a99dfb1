"""`GET /metrics`: Prometheus counters of settled tokens and cost."""

from __future__ import annotations

from fastapi import APIRouter, Response

from outpost.api.auth import ContainerDep

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response)
async def metrics(container: ContainerDep) -> Response:
    """The counters in Prometheus' text format. Unauthenticated, like the health checks, so that a
    scraper needs no API key: the counters are labelled by tenant id, agent and model, and hold no
    secret, but they show every tenant's spending, so expose this path only where the operator's
    scraper can reach it (a reverse proxy in front of Outpost should not route it publicly)."""
    body, content_type = container.ledger.metrics.render()
    return Response(body, media_type=content_type)
