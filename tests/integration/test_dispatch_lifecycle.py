"""A dispatch's life through the API, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.conftest import MakeServer, Server
from tests.integration.helpers import TERMINAL, all_events, submit, wait_for_status


async def test_shell_dispatch_succeeds_with_its_output_in_the_logs(server: Server) -> None:
    headers = await server.new_tenant()
    created = await submit(server.client, headers, "echo hello world; echo oops >&2")
    assert created["status"] == "queued"
    done = await wait_for_status(server.client, headers, created["id"], TERMINAL)
    assert done["status"] == "succeeded"
    assert done["exit_code"] == 0
    assert done["result"] == "hello world"
    assert done["started_at"] is not None
    assert done["finished_at"] >= done["started_at"]
    events = await all_events(server.client, headers, created["id"])
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    statuses = [e["data"]["status"] for e in events if e["kind"] == "status"]
    assert statuses == ["queued", "provisioning", "running", "succeeded"]
    lines = [(e["data"]["stream"], e["data"]["line"]) for e in events if e["kind"] == "log"]
    assert ("stdout", "hello world") in lines
    assert ("stderr", "oops") in lines
    assert events[-1]["data"]["status"] == "succeeded"


async def test_nonzero_exit_fails_with_agent_error(server: Server) -> None:
    headers = await server.new_tenant()
    created = await submit(server.client, headers, "echo partial; exit 3")
    done = await wait_for_status(server.client, headers, created["id"], TERMINAL)
    assert done["status"] == "failed"
    assert done["exit_code"] == 3
    assert done["failure"] == {"reason": "agent_error", "detail": "exited with status 3"}


async def test_timeout_kills_the_run_and_ends_timed_out(server: Server) -> None:
    headers = await server.new_tenant()
    created = await submit(server.client, headers, "echo started; sleep 30", timeout_s=1)
    done = await wait_for_status(server.client, headers, created["id"], TERMINAL, timeout_s=10)
    assert done["status"] == "timed_out"
    assert done["failure"] == {"reason": "timed_out", "detail": "killed after its 1 s limit"}
    events = await all_events(server.client, headers, created["id"])
    assert any(e["kind"] == "log" and e["data"]["line"] == "started" for e in events)


async def test_cancel_of_a_running_dispatch_is_immediate_and_keeps_its_logs(server: Server) -> None:
    headers = await server.new_tenant()
    created = await submit(server.client, headers, "echo before-cancel; sleep 30")
    await wait_for_status(server.client, headers, created["id"], {"running"})
    await asyncio.sleep(0.2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    response = await server.client.post(f"/v1/dispatches/{created['id']}/cancel", headers=headers)
    assert loop.time() - started < 2
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    events = await all_events(server.client, headers, created["id"])
    assert any(e["kind"] == "log" and e["data"]["line"] == "before-cancel" for e in events)
    assert events[-1]["kind"] == "status"
    assert events[-1]["data"]["status"] == "cancelled"


async def test_cancel_of_a_queued_dispatch_means_it_never_runs(make_server: MakeServer) -> None:
    server = await make_server(worker={"slots": 1})
    headers = await server.new_tenant()
    blocker = await submit(server.client, headers, "sleep 30")
    await wait_for_status(server.client, headers, blocker["id"], {"running"})
    queued = await submit(server.client, headers, "echo should-not-run")
    response = await server.client.post(f"/v1/dispatches/{queued['id']}/cancel", headers=headers)
    assert response.json()["status"] == "cancelled"
    await server.client.post(f"/v1/dispatches/{blocker['id']}/cancel", headers=headers)
    await asyncio.sleep(0.3)
    events = await all_events(server.client, headers, queued["id"])
    assert [e["data"]["status"] for e in events] == ["queued", "cancelled"]


async def test_cancel_of_a_finished_dispatch_changes_nothing(server: Server) -> None:
    headers = await server.new_tenant()
    created = await submit(server.client, headers, "true")
    done = await wait_for_status(server.client, headers, created["id"], TERMINAL)
    response = await server.client.post(f"/v1/dispatches/{created['id']}/cancel", headers=headers)
    assert response.status_code == 200
    assert without_links(response.json()) == without_links(done)
    kinds = [e["kind"] for e in await all_events(server.client, headers, created["id"])]
    assert kinds == ["status", "status", "status", "compute", "artifacts", "status"]


def without_links(dispatch: dict[str, Any]) -> dict[str, Any]:
    """The dispatch without its artifacts' signed links, which each read signs afresh."""
    unsigned = [
        {k: v for k, v in a.items() if k not in {"download_url", "url_expires_at"}}
        for a in dispatch["artifacts"]
    ]
    return {**dispatch, "artifacts": unsigned}


async def test_one_hundred_concurrent_cancels_make_one_terminal_event(server: Server) -> None:
    headers = await server.new_tenant()
    created = await submit(server.client, headers, "sleep 30")
    await wait_for_status(server.client, headers, created["id"], {"running"})
    url = f"/v1/dispatches/{created['id']}/cancel"
    responses = await asyncio.gather(*(server.client.post(url, headers=headers) for _ in range(100)))
    assert {r.status_code for r in responses} == {200}
    assert {r.json()["status"] for r in responses} == {"cancelled"}
    events = await all_events(server.client, headers, created["id"])
    terminal = [e for e in events if e["kind"] == "status" and e["data"]["status"] in TERMINAL]
    assert len(terminal) == 1


async def test_many_dispatches_run_concurrently_up_to_the_slot_count(make_server: MakeServer) -> None:
    server = await make_server(worker={"slots": 4})
    headers = await server.new_tenant()
    created = [await submit(server.client, headers, f"echo n{i}") for i in range(12)]
    for item in created:
        done = await wait_for_status(server.client, headers, item["id"], TERMINAL)
        assert done["status"] == "succeeded"
