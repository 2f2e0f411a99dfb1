"""A run's sandbox gets ready while its worker records `running`, and its command starts only once that
is recorded: never before, and never for a dispatch cancelled meanwhile."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import pytest

from outpost.db.repositories.dispatches import DispatchRow
from outpost.sandbox.base import Gate, Sandbox, SandboxRun, SandboxSpec
from tests.conftest import MakeServer, Server
from tests.integration.helpers import TERMINAL, all_events, submit, wait_for_status
from tests.integration.sandbox_wrappers import WrappedSandbox, wrap_server_sandboxes
from tests.procs import alive, pids_running

MarkRunning = Callable[..., Awaitable[DispatchRow | None]]


class StartRecorder(WrappedSandbox):
    """Notes how each start ended: "started", or the exception's name."""

    def __init__(self, inner: Sandbox, ends: list[str]) -> None:
        super().__init__(inner)
        self.ends = ends

    async def start(self, spec: SandboxSpec, gate: Gate | None = None) -> SandboxRun:
        try:
            run = await self.inner.start(spec, gate)
        except BaseException as exc:
            self.ends.append(type(exc).__name__)
            raise
        self.ends.append("started")
        return run


@pytest.fixture
def start_ends(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """How the starts of the servers this test starts ended, in order."""
    ends: list[str] = []
    wrap_server_sandboxes(monkeypatch, lambda inner: StartRecorder(inner, ends))
    return ends


def hold_mark_running(server: Server, before: Callable[[], Awaitable[None]]) -> None:
    """The server's worker awaits `before()` each time it is about to record `running`."""
    runs: Any = server.container.runs
    record: MarkRunning = runs.mark_running

    async def held(row: DispatchRow, base_commit: str | None = None) -> DispatchRow | None:
        await before()
        return await record(row, base_commit=base_commit)

    runs.mark_running = held


def _instant(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def test_the_command_starts_after_running_is_recorded(make_server: MakeServer) -> None:
    server = await make_server()
    headers = await server.new_tenant()
    hold_mark_running(server, lambda: asyncio.sleep(0.4))  # the sandbox is ready long before
    dispatch = await submit(server.client, headers, "date +%s.%N")
    done = await wait_for_status(server.client, headers, dispatch["id"], TERMINAL)
    assert done["status"] == "succeeded"
    events = await all_events(server.client, headers, dispatch["id"])
    [running] = [e for e in events if e["kind"] == "status" and e["data"]["status"] == "running"]
    [printed] = [e for e in events if e["kind"] == "log"]
    assert printed["seq"] > running["seq"]
    assert float(printed["data"]["line"]) >= _instant(running["created_at"])  # the command's own clock


async def test_a_dispatch_cancelled_while_running_is_recorded_never_runs_its_command(
    make_server: MakeServer, start_ends: list[str]
) -> None:
    server = await make_server(worker={"abort_grace_s": 0.2})
    headers = await server.new_tenant()
    reached, release = asyncio.Event(), asyncio.Event()

    async def until_released() -> None:
        reached.set()
        await release.wait()

    hold_mark_running(server, until_released)
    task = "echo ran; sleep 41.7"
    dispatch = await submit(server.client, headers, task)
    await asyncio.wait_for(reached.wait(), 20)
    cancel = await server.client.post(f"/v1/dispatches/{dispatch['id']}/cancel", headers=headers)
    assert cancel.status_code == 200, cancel.text
    assert cancel.json()["status"] == "cancelled"
    release.set()  # `running` is now too late: the dispatch has ended
    await asyncio.sleep(0.5)
    events = await all_events(server.client, headers, dispatch["id"])
    statuses = [e["data"]["status"] for e in events if e["kind"] == "status"]
    assert statuses == ["queued", "provisioning", "cancelled"]
    assert [e for e in events if e["kind"] == "log"] == []
    assert start_ends == ["StartCalledOff"]
    assert alive(pids_running(task)) == []  # nor a sandbox holding it back


@pytest.mark.parametrize("failure", [RuntimeError("the database went away")])
async def test_a_failure_to_record_running_fails_the_dispatch_without_running_its_command(
    make_server: MakeServer, start_ends: list[str], failure: Exception
) -> None:
    server = await make_server()
    headers = await server.new_tenant()

    async def fail() -> None:
        raise failure

    hold_mark_running(server, fail)
    task = "echo ran; sleep 42.3"
    dispatch = await submit(server.client, headers, task)
    done = await wait_for_status(server.client, headers, dispatch["id"], TERMINAL)
    assert (done["status"], done["failure"]["reason"]) == ("failed", "internal")
    events = await all_events(server.client, headers, dispatch["id"])
    assert [e for e in events if e["kind"] == "log"] == []
    assert start_ends == [type(failure).__name__]
    assert alive(pids_running(task)) == []
