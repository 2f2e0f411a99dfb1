"""The `process` backend's shared gateway listener, end to end: a real `outpost serve` with
OUTPOST_SANDBOX__BACKEND=process runs a real agent CLI against the fake provider.

That backend opens one loopback listener for every run of the server (its runs share the host's network),
so the gateway tells runs apart by their tokens alone: a finished run's token must be refused there, and
runs going through it at the same time must each get their own answers and their own metering.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from outpost.sandbox.naming import instance_marker
from outpost.sandbox.procfs import pids_with_marker
from tests.agent_installs import require_installed
from tests.fakes.provider import FakeProvider
from tests.fakes.provider_script import FILE_CONTENT, FINAL_TEXT
from tests.integration.agent_servers import REAL_KEY, AgentServer, agent_server
from tests.integration.helpers import settled_cost_usd

pytestmark = pytest.mark.slow

AGENT = "claude"  # its gateway URL and token are both in its environment, where the test reads them
CALL_DELAY_S = 1.0
"""Every model call waits this long: the runs stay alive while the test reads their environment."""
CALLS_PER_RUN = 2  # the scripted write, then the final text


@dataclass(frozen=True)
class GatewayAccess:
    """What a run was given to reach the gateway, read from its process's environment."""

    url: str
    token: str


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProvider]:
    with FakeProvider() as provider:
        yield provider


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, fake: FakeProvider) -> Iterator[AgentServer]:
    """One server for the module: starting one (and creating its tenant) takes seconds."""
    require_installed(AGENT)
    data_dir = tmp_path_factory.mktemp("process-backend") / "data"
    with agent_server(data_dir, fake, OUTPOST_SANDBOX__BACKEND="process") as started:
        yield started


@pytest.fixture
def served(server: AgentServer, fake: FakeProvider) -> AgentServer:
    fake.reset()
    fake.first_byte_delay_s = CALL_DELAY_S
    fake.mode = "slow_first_byte"
    return server


def _task(target: Path) -> str:
    # The process backend confines nothing: the CLI can write outside its workspace, where the file
    # outlives the workspace's removal at the end of the run.
    target.parent.mkdir(parents=True, exist_ok=True)
    return f"Create the file FILE={target}"


def _accesses(
    served: AgentServer, dispatch_ids: list[str], timeout_s: float = 20
) -> dict[str, GatewayAccess]:
    """Each dispatch's gateway access, read from one scan of /proc in which all of them were running."""
    instance = instance_marker(served.process.data_dir)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = {}
        for dispatch_id in dispatch_ids:
            environs = [_environ(pid) for pid in pids_with_marker(f"{instance}:{dispatch_id}.")]
            access = next((_access(env) for env in environs if "ANTHROPIC_API_KEY" in env), None)
            if access is not None:
                found[dispatch_id] = access
        if len(found) == len(dispatch_ids):
            return found
        time.sleep(0.05)
    raise AssertionError(f"the runs of {dispatch_ids} were never seen running together")


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}  # the process ended meanwhile
    pairs = (item.decode(errors="replace").partition("=") for item in raw.split(b"\0") if item)
    return {name: value for name, _, value in pairs}


def _access(env: dict[str, str]) -> GatewayAccess:
    return GatewayAccess(env["ANTHROPIC_BASE_URL"], env["ANTHROPIC_API_KEY"])


def _assert_succeeded_and_metered(served: AgentServer, dispatch_id: str) -> None:
    done = served.finished(dispatch_id)
    events = served.events(dispatch_id)
    assert done["status"] == "succeeded", (done, [e["data"] for e in events if e["kind"] == "log"][-20:])
    assert done["result"] == FINAL_TEXT
    metered = [event["data"] for event in events if event["kind"] == "usage"]
    assert len(metered) == CALLS_PER_RUN
    assert done["usage"]["input_tokens"] == sum(call["input_tokens"] for call in metered) > 0
    assert done["usage"]["output_tokens"] > 0
    assert done["cost_usd"] == pytest.approx(settled_cost_usd(events), abs=3e-6)
    assert sum(call["cost_usd"] for call in metered) > 0


def _replay(access: GatewayAccess) -> httpx.Response:
    body: dict[str, Any] = {
        "model": "claude-sonnet-5-5", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}],
    }  # fmt: skip
    return httpx.post(f"{access.url}/v1/messages", json=body, headers={"x-api-key": access.token}, timeout=10)


def test_a_run_through_the_shared_listener_writes_its_file_and_its_token_dies_with_it(
    served: AgentServer, fake: FakeProvider, tmp_path: Path
) -> None:
    target = tmp_path / "out" / "a.txt"
    dispatch_id = served.submit(AGENT, _task(target), timeout_s=60)
    access = _accesses(served, [dispatch_id])[dispatch_id]
    assert access.url.startswith("http://127.0.0.1:")
    assert access.url != f"{served.process.url}/anthropic", "runs must not reach the API port"
    _assert_succeeded_and_metered(served, dispatch_id)
    assert target.read_text() == FILE_CONTENT
    calls = len(fake.requests)
    replayed = _replay(access)
    assert replayed.status_code == 401, replayed.text
    assert replayed.json()["error"]["type"] == "authentication_error"
    assert len(fake.requests) == calls, "the replayed call reached the provider"
    assert all(request.api_key == REAL_KEY for request in fake.requests)


def test_concurrent_runs_share_the_one_listener_and_both_succeed(
    served: AgentServer, fake: FakeProvider, tmp_path: Path
) -> None:
    targets = [tmp_path / "out" / "a.txt", tmp_path / "out" / "b.txt"]
    dispatch_ids = [served.submit(AGENT, _task(target), timeout_s=60) for target in targets]
    accesses = _accesses(served, dispatch_ids)
    first, second = (accesses[dispatch_id] for dispatch_id in dispatch_ids)
    assert first.url == second.url, "each run got a listener of its own"
    assert first.token != second.token
    for dispatch_id, target in zip(dispatch_ids, targets, strict=True):
        _assert_succeeded_and_metered(served, dispatch_id)
        assert target.read_text() == FILE_CONTENT
    assert len(fake.requests) == CALLS_PER_RUN * len(dispatch_ids)
    assert all(_replay(access).status_code == 401 for access in accesses.values())
