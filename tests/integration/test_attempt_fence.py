"""A late result from a worker taken for lost cannot overwrite the attempt that replaced it."""

from __future__ import annotations

from outpost.domain.dispatch import DispatchStatus, FailureReason
from outpost.services.runs import Outcome
from tests.conftest import MakeServer


async def test_a_result_from_an_earlier_attempt_is_ignored(make_server: MakeServer) -> None:
    server = await make_server(worker={"enabled": False}, limits={"requests_per_s": 0})
    tenant = await server.new_tenant()
    created = await server.client.post(
        "/v1/dispatches", json={"agent": "shell", "task": "true"}, headers=tenant
    )
    assert created.status_code == 202, created.text
    runs = server.container.runs
    [first] = await runs.claim(1)
    assert await runs.reconcile_lost() == (1, 0)  # its worker is lost: queued again
    late_while_queued = await runs.finish(first.id, Outcome(DispatchStatus.SUCCEEDED), first.attempt)
    assert late_while_queued is not None
    assert (late_while_queued.status, late_while_queued.attempt) == ("queued", 1)
    [second] = await runs.claim(1)
    assert second.attempt == 2
    assert await runs.mark_running(second) is not None
    late = await runs.finish(first.id, Outcome(DispatchStatus.FAILED, reason=FailureReason.INTERNAL), 1)
    assert late is not None
    assert (late.status, late.attempt) == ("running", 2)
    done = await runs.finish(second.id, Outcome(DispatchStatus.SUCCEEDED), second.attempt)
    assert done is not None
    assert (done.status, done.attempt) == ("succeeded", 2)
    shown = (await server.client.get(f"/v1/dispatches/{first.id}", headers=tenant)).json()
    assert (shown["status"], shown["attempt"]) == ("succeeded", 2)
