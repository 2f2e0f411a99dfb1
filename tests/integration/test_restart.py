"""kill -9 of the server with dispatches queued and running, then a restart: nothing stuck or orphaned.

On both backends: `process` runs outlive the crash and the restarted server's janitor kills them; `bwrap`
sandboxes die with the server (`--die-with-parent`) and the janitor removes their mounts and cgroups.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from outpost.sandbox import mounts
from outpost.sandbox.process import instance_marker
from outpost.sandbox.procfs import pids_with_marker
from outpost.sandbox.uids import UidPool, pids_owned_by
from tests.integration.helpers import TERMINAL
from tests.integration.processes import ServerProcess, wait_for_status_sync
from tests.procs import alive
from tests.requirements import require
from tests.sandboxes import bwrap_problems, sandbox_env

pytestmark = pytest.mark.slow


@dataclass
class Runs:
    """A server's dispatch processes as the host sees them."""

    server: ServerProcess
    backend: str

    def pids(self) -> set[int]:
        if self.backend == "process":
            return set(pids_with_marker(instance_marker(self.server.data_dir)))
        first = int(self.server.env["OUTPOST_SANDBOX__UID_FIRST"])
        pool = UidPool(first, int(self.server.env["OUTPOST_SANDBOX__UID_COUNT"]))
        return set(alive(pids_owned_by(pool)))

    def mounts(self) -> list[Path]:
        return mounts.mounts_under(self.server.data_dir.resolve())


@pytest.fixture(params=["process", "bwrap"])
def runs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Runs]:
    backend: str = request.param
    env = {"OUTPOST_WORKER__SLOTS": "2"}
    if backend == "bwrap":
        require("; ".join(bwrap_problems()) or None)
        env |= sandbox_env()
    env["OUTPOST_SANDBOX__BACKEND"] = backend
    server = ServerProcess(tmp_path / "data", env=env)
    yield Runs(server, backend)
    server.stop()


def _submit(client: httpx.Client, task: str) -> str:
    response = client.post("/v1/dispatches", json={"agent": "shell", "task": task})
    assert response.status_code == 202, response.text
    dispatch_id: str = response.json()["id"]
    return dispatch_id


def _crash_with_work_in_flight(runs: Runs) -> tuple[httpx.Client, list[str], list[str]]:
    """Start the server, put two dispatches running and two queued, then SIGKILL the server."""
    server = runs.server
    server.start()
    key = server.create_tenant("acme")
    client = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=10)
    running = [_submit(client, "echo started; sleep 2; echo finished") for _ in range(2)]
    for dispatch_id in running:
        wait_for_status_sync(client, dispatch_id, {"running"})
    queued = [_submit(client, "echo queued work") for _ in range(2)]
    time.sleep(0.3)  # let the runs print and the sleeps start
    before = runs.pids()
    server.kill_hard()
    assert before, "the running dispatches should have had processes"
    if runs.backend == "process":
        assert runs.pids() & before  # orphans: only the restarted server's janitor ends them
    else:
        assert _within(2.0, lambda: not runs.pids())  # the sandboxes died with the server
        assert runs.mounts()  # the running dispatches' workspaces, left for the janitor
    return client, running, queued


def _within(seconds: float, condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def _nothing_left(runs: Runs) -> bool:
    """Once every dispatch is over: no process and no mount (a workspace goes just after its outcome)."""
    return _within(5.0, lambda: not runs.pids() and not runs.mounts())


def test_after_kill_9_running_dispatches_rerun_and_queued_ones_run(runs: Runs) -> None:
    client, running, queued = _crash_with_work_in_flight(runs)
    runs.server.start()
    for dispatch_id in running:
        done = wait_for_status_sync(client, dispatch_id, TERMINAL)
        assert (done["status"], done["attempt"]) == ("succeeded", 2)
        events = client.get(f"/v1/dispatches/{dispatch_id}/logs?limit=1000").json()["items"]
        notes = [e["data"].get("note", "") for e in events if e["kind"] == "status"]
        assert any("worker lost" in note for note in notes)
        assert sum(e["data"].get("line") == "started" for e in events) == 2  # one per attempt
    for dispatch_id in queued:
        assert wait_for_status_sync(client, dispatch_id, TERMINAL)["status"] == "succeeded"
    assert _nothing_left(runs)
    client.close()


def test_after_kill_9_a_dispatch_out_of_attempts_fails_as_worker_lost(runs: Runs) -> None:
    runs.server.env["OUTPOST_WORKER__MAX_ATTEMPTS"] = "1"
    client, running, queued = _crash_with_work_in_flight(runs)
    runs.server.start()
    for dispatch_id in running:
        done = client.get(f"/v1/dispatches/{dispatch_id}").json()
        assert done["status"] == "failed"
        assert done["failure"]["reason"] == "worker_lost"
    for dispatch_id in queued:
        assert wait_for_status_sync(client, dispatch_id, TERMINAL)["status"] == "succeeded"
    assert _nothing_left(runs)
    client.close()
