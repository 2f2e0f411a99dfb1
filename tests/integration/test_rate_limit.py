"""The per-key API rate limit: a 429 problem with Retry-After past the burst, and event streams and health
checks that do not count against it."""

from __future__ import annotations

from tests.conftest import MakeServer
from tests.integration.api_checks import assert_problem
from tests.integration.sse_client import SseEvent, sse_items

RATE_PER_S = 0.05
"""One token every 20 s: nothing refills while the test runs."""
BURST = 3


async def test_streams_and_health_checks_do_not_count_and_the_request_past_the_burst_is_a_429(
    make_server: MakeServer,
) -> None:
    server = await make_server(
        worker={"enabled": False}, limits={"requests_per_s": RATE_PER_S, "requests_burst": BURST}
    )
    tenant = await server.new_tenant()
    created = await server.client.post(
        "/v1/dispatches", json={"agent": "shell", "task": "true"}, headers=tenant
    )
    assert created.status_code == 202, created.text
    dispatch_id = created.json()["id"]
    cancelled = await server.client.post(f"/v1/dispatches/{dispatch_id}/cancel", headers=tenant)
    assert cancelled.status_code == 200, cancelled.text  # two of the three tokens are spent
    for _ in range(10):
        async with server.client.stream(
            "GET", f"/v1/dispatches/{dispatch_id}/events", headers=tenant
        ) as stream:
            assert stream.status_code == 200
            events = [item async for item in sse_items(stream) if isinstance(item, SseEvent)]
        assert events[-1].json()["data"]["status"] == "cancelled"
        for path in ("/health/live", "/health/ready"):
            assert (await server.client.get(path)).status_code == 200
    last = await server.client.get(f"/v1/dispatches/{dispatch_id}", headers=tenant)
    assert last.status_code == 200, "a stream or a health check took a token"
    limited = await server.client.get(f"/v1/dispatches/{dispatch_id}", headers=tenant)
    assert_problem(limited, 429)
    assert limited.json()["type"] == "urn:outpost:problem:rate-limited"
    assert 1 <= int(limited.headers["Retry-After"]) <= 1 / RATE_PER_S
    other = await server.new_tenant()  # each key has its own bucket
    assert (await server.client.get("/v1/dispatches", headers=other)).status_code == 200


async def test_a_stream_still_needs_a_valid_key(make_server: MakeServer) -> None:
    server = await make_server(worker={"enabled": False}, limits={"requests_per_s": 0})
    for headers in ({}, {"Authorization": "Bearer op_nope_nope"}):
        response = await server.client.get("/v1/events", headers=headers)
        assert_problem(response, 401)


async def test_a_rate_of_zero_disables_the_limit(make_server: MakeServer) -> None:
    server = await make_server(worker={"enabled": False}, limits={"requests_per_s": 0, "requests_burst": 1})
    tenant = await server.new_tenant()
    for _ in range(20):
        assert (await server.client.get("/v1/dispatches", headers=tenant)).status_code == 200
