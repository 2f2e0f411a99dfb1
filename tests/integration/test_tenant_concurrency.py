"""A tenant's cap on dispatches at once, end to end: set by an admin, obeyed by the worker, explained to
the tenant while its dispatches wait, and harmless to other tenants."""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import datetime
from typing import Any

import pytest

from tests.conftest import MakeServer, Server
from tests.integration.api_checks import assert_invalid
from tests.integration.helpers import TERMINAL, all_events, submit, wait_for_status
from tests.integration.test_tenant_policy import patch_tenant, read_tenant, tenant_id_of

SLOW_TASK = "sleep 1; echo done"
HANDOVER_S = 2.0
"""Most time from one dispatch's end to the claim of the next its tenant's cap held back."""
CAP_RAISE_S = 3.0
"""Most time from a cap's raise to the claim of a dispatch it held back (its recheck would be 5 s)."""


@pytest.fixture
async def server(make_server: MakeServer) -> Server:
    return await make_server(limits={"requests_per_s": 0})


async def capped(server: Server, cap: int) -> dict[str, str]:
    """A new tenant whose cap an admin set to `cap`; returns the tenant's headers."""
    admin = await server.new_tenant(admin=True)
    tenant = await server.new_tenant()
    policy = await patch_tenant(
        server, admin, await tenant_id_of(server, tenant), {"max_concurrent_dispatches": cap}
    )
    assert policy["max_concurrent_dispatches"] == cap
    return tenant


async def wait_for_reason(server: Server, headers: dict[str, str], dispatch_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while True:
        response = await server.client.get(f"/v1/dispatches/{dispatch_id}", headers=headers)
        body: dict[str, Any] = response.json()
        if body["queue_reason"] is not None:
            return body
        assert time.monotonic() < deadline, f"dispatch {dispatch_id} never said why it waits: {body}"
        await asyncio.sleep(0.02)


async def run_interval(
    server: Server, headers: dict[str, str], dispatch_id: str
) -> tuple[datetime, datetime]:
    """From the claim (`provisioning`) to the end, as the dispatch's status events say."""
    events = await all_events(server.client, headers, dispatch_id)
    statuses = [
        (e["data"]["status"], datetime.fromisoformat(e["created_at"]))
        for e in events
        if e["kind"] == "status"
    ]
    started = next(at for status, at in statuses if status == "provisioning")
    ended = next(at for status, at in statuses if status in TERMINAL)
    return started, ended


async def test_a_tenant_capped_at_one_runs_its_dispatches_one_at_a_time_and_the_waiting_ones_say_why(
    server: Server,
) -> None:
    tenant = await capped(server, 1)
    ids = [(await submit(server.client, tenant, SLOW_TASK))["id"] for _ in range(3)]
    for waiting in ids[1:]:
        shown = await wait_for_reason(server, tenant, waiting)
        assert shown["status"] == "queued"
        assert "max_concurrent_dispatches (1)" in shown["queue_reason"]
    finished = [await wait_for_status(server.client, tenant, i, TERMINAL, 30) for i in ids]
    assert [done["status"] for done in finished] == ["succeeded"] * 3
    assert all(done["queue_reason"] is None for done in finished)
    intervals = [await run_interval(server, tenant, i) for i in ids]
    for earlier, later in itertools.pairwise(intervals):
        assert earlier[1] <= later[0], "two of the tenant's dispatches ran at once"
        # The next one is claimed as the slot frees, not at its recheck (a heartbeat, 5 s, later).
        assert (later[0] - earlier[1]).total_seconds() < HANDOVER_S
    for waiting in ids[1:]:
        events = await all_events(server.client, tenant, waiting)
        held = [e for e in events if e["kind"] == "status" and e["data"].get("held") == "tenant_cap"]
        # Claims went on every 0.2 s while it waited: its reason was still told once.
        assert len(held) == 1, held
        assert held[0]["data"]["status"] == "queued"
        assert "max_concurrent_dispatches" in held[0]["data"]["note"]


async def test_a_capped_tenant_does_not_delay_another_tenants_dispatches(server: Server) -> None:
    capped_tenant = await capped(server, 1)
    other = await server.new_tenant()
    capped_ids = [(await submit(server.client, capped_tenant, SLOW_TASK))["id"] for _ in range(3)]
    other_id = (await submit(server.client, other, "echo quick"))["id"]
    done = await wait_for_status(server.client, other, other_id, TERMINAL, 20)
    assert done["status"] == "succeeded"
    last = await server.client.get(f"/v1/dispatches/{capped_ids[-1]}", headers=capped_tenant)
    assert last.json()["status"] == "queued"  # still waiting its turn behind the first two
    for dispatch_id in capped_ids:
        await wait_for_status(server.client, capped_tenant, dispatch_id, TERMINAL, 30)


async def test_raising_a_cap_lets_waiting_dispatches_run_at_once(server: Server) -> None:
    admin = await server.new_tenant(admin=True)
    tenant = await server.new_tenant()
    tenant_id = await tenant_id_of(server, tenant)
    await patch_tenant(server, admin, tenant_id, {"max_concurrent_dispatches": 1})
    # Long enough that the first still runs when the second starts on a loaded machine (both are
    # cancelled at the end); the wait below stays shorter than the recheck (a heartbeat, 5 s).
    ids = [(await submit(server.client, tenant, "sleep 30"))["id"] for _ in range(2)]
    await wait_for_reason(server, tenant, ids[1])
    await patch_tenant(server, admin, tenant_id, {"max_concurrent_dispatches": 2})
    # A claim after the change takes the second while the first still runs.
    await wait_for_status(server.client, tenant, ids[1], {"provisioning", "running"}, CAP_RAISE_S)
    first = await server.client.get(f"/v1/dispatches/{ids[0]}", headers=tenant)
    assert first.json()["status"] in ("provisioning", "running")
    for dispatch_id in ids:
        await server.client.post(f"/v1/dispatches/{dispatch_id}/cancel", headers=tenant)


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True, 100_001])
async def test_a_cap_that_is_not_a_whole_number_from_one_up_is_refused_and_changes_nothing(
    server: Server, bad: object
) -> None:
    admin = await server.new_tenant(admin=True)
    tenant_id = await tenant_id_of(server, await server.new_tenant())
    await patch_tenant(server, admin, tenant_id, {"max_concurrent_dispatches": 3})
    response = await server.client.patch(
        f"/v1/tenants/{tenant_id}", json={"max_concurrent_dispatches": bad}, headers=admin
    )
    assert_invalid(response, "max_concurrent_dispatches")
    assert (await read_tenant(server, admin, tenant_id))["max_concurrent_dispatches"] == 3


async def test_null_removes_the_cap_and_a_patch_without_it_keeps_it(server: Server) -> None:
    admin = await server.new_tenant(admin=True)
    tenant_id = await tenant_id_of(server, await server.new_tenant())
    await patch_tenant(server, admin, tenant_id, {"max_concurrent_dispatches": 4})
    kept = await patch_tenant(server, admin, tenant_id, {"egress_allow": ["pypi.org"]})
    assert kept["max_concurrent_dispatches"] == 4
    removed = await patch_tenant(server, admin, tenant_id, {"max_concurrent_dispatches": None})
    assert removed["max_concurrent_dispatches"] is None
    assert removed["egress_allow"] == ["pypi.org"]


async def test_a_tenant_key_cannot_set_its_own_cap(server: Server) -> None:
    tenant = await server.new_tenant()
    tenant_id = await tenant_id_of(server, tenant)
    response = await server.client.patch(
        f"/v1/tenants/{tenant_id}", json={"max_concurrent_dispatches": 1000}, headers=tenant
    )
    assert response.status_code == 403
