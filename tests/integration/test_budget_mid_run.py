"""A run stopped by its budget mid-way: the gateway lets its first model call through (a REAL agent CLI
writes its file), refuses the next with 402 without reaching the provider, and the run stops at once (the
CLIs do not retry a 402; the worker stops a run that keeps calling anyway). The dispatch fails with
`budget_exceeded`, long before its timeout, with its changes and logs kept."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from outpost.sandbox.base import Gate, SandboxRun, SandboxSpec
from tests.agent_installs import INSTALL_DIR, require_installed
from tests.conftest import MakeServer, Server
from tests.fakes.provider import FakeProvider
from tests.fakes.provider_script import FILE_CONTENT
from tests.integration.helpers import TERMINAL, all_events, wait_for_status
from tests.integration.sandbox_wrappers import WrappedSandbox, wrap_server_sandboxes
from tests.sandboxes import sandbox_settings

AGENT = "codex"  # the quickest CLI to start; the gateway path is the same for every agent
TIMEOUT_S = 120
ONE_MICRO_USD = 0.000001
"""A limit the first call (free so far) passes and its cost then exceeds."""


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProvider]:
    with FakeProvider() as provider:
        yield provider


@pytest.fixture
async def server(make_server: MakeServer, fake: FakeProvider, tmp_path: Path) -> Server:
    require_installed(AGENT)
    fake.reset()
    providers = {"openai": {"base_url": fake.base_url, "api_key": "sk-budget-test"}}
    return await make_server(
        data_dir=tmp_path / "data", sandbox=sandbox_settings(), providers=providers,
        agents={"install_dir": INSTALL_DIR}, limits={"requests_per_s": 0},
    )  # fmt: skip


async def limited_tenant(server: Server, limit: str) -> tuple[dict[str, str], dict[str, Any]]:
    """A tenant and the dispatch body for it, one of the two limits set to one micro-dollar."""
    tenant = await server.new_tenant()
    body: dict[str, Any] = {"agent": AGENT, "task": "Create the file FILE=/workspace/hello.txt"}
    if limit == "max_cost_usd":
        body["max_cost_usd"] = ONE_MICRO_USD
    else:
        admin = await server.new_tenant(admin=True)
        tenant_id = (await server.client.get("/v1/keys", headers=tenant)).json()[0]["tenant_id"]
        patched = await server.client.patch(
            f"/v1/tenants/{tenant_id}", json={"monthly_budget_usd": ONE_MICRO_USD}, headers=admin
        )
        assert patched.status_code == 200, patched.text
    return tenant, {**body, "timeout_s": TIMEOUT_S}


def model_calls(fake: FakeProvider) -> int:
    return sum(1 for request in fake.requests if not request.path.endswith("/models"))


@pytest.mark.slow
@pytest.mark.parametrize("limit", ["max_cost_usd", "monthly_budget_usd"])
async def test_a_run_over_budget_is_stopped_at_its_next_call_and_fails_keeping_its_changes_and_logs(
    server: Server, fake: FakeProvider, limit: str
) -> None:
    tenant, body = await limited_tenant(server, limit)
    response = await server.client.post("/v1/dispatches", json=body, headers=tenant)
    assert response.status_code == 202, response.text
    done = await wait_for_status(server.client, tenant, response.json()["id"], TERMINAL, TIMEOUT_S + 30)
    events = await all_events(server.client, tenant, done["id"])
    assert (done["status"], done["failure"]["reason"]) == ("failed", "budget_exceeded"), (done, events[-20:])
    wanted = "reaching its max_cost_usd of $0.000001" if limit == "max_cost_usd" else "monthly budget of"
    assert wanted in done["failure"]["detail"]
    assert model_calls(fake) == 1, "a refused call reached the provider"
    assert [event["kind"] for event in events].count("usage") == 1
    assert done["cost_usd"] > 0
    ran_s = _time(done["finished_at"]) - _time(done["started_at"])
    assert ran_s < TIMEOUT_S / 2, "the run was left to its timeout"
    artifacts = {item["name"]: item for item in done["artifacts"]}
    patch = (await server.client.get(artifacts["changes.patch"]["download_url"])).text
    assert "hello.txt" in patch
    assert FILE_CONTENT.strip() in patch
    logged = (await server.client.get(artifacts["events.jsonl"]["download_url"])).text.splitlines()
    assert any(json.loads(line)["kind"] == "usage" for line in logged)


STUBBORN = """echo partial > partial.txt
while :; do
  curl -s -o /dev/null -w 'call %{http_code}\\n' -H "x-api-key: $ANTHROPIC_API_KEY" \\
    -H 'content-type: application/json' "$ANTHROPIC_BASE_URL/v1/messages" \\
    -d '{"model": "claude-sonnet-5-5", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}'
  sleep 0.2
done"""
"""A client that calls its model again and again whatever the answer, through the gateway it was given."""


class StubbornClient(WrappedSandbox):
    """A sandbox whose runs are `STUBBORN`, with the environment the agent's adapter gave them."""

    async def start(self, spec: SandboxSpec, gate: Gate | None = None) -> SandboxRun:
        return await self.inner.start(replace(spec, argv=["/bin/sh", "-c", STUBBORN]), gate)


@pytest.fixture
async def stubborn_server(
    make_server: MakeServer, fake: FakeProvider, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Server:
    require_installed("claude")
    fake.reset()
    wrap_server_sandboxes(monkeypatch, StubbornClient)
    providers = {"anthropic": {"base_url": fake.base_url, "api_key": "sk-budget-test"}}
    return await make_server(
        data_dir=tmp_path / "data", sandbox=sandbox_settings(), providers=providers,
        agents={"install_dir": INSTALL_DIR}, limits={"requests_per_s": 0},
    )  # fmt: skip


async def test_a_run_that_keeps_calling_after_the_refusal_is_stopped_by_the_worker_not_its_timeout(
    stubborn_server: Server, fake: FakeProvider
) -> None:
    server = stubborn_server
    tenant = await server.new_tenant()
    body = {"agent": "claude", "task": "spend", "max_cost_usd": ONE_MICRO_USD, "timeout_s": TIMEOUT_S}
    response = await server.client.post("/v1/dispatches", json=body, headers=tenant)
    assert response.status_code == 202, response.text
    done = await wait_for_status(server.client, tenant, response.json()["id"], TERMINAL, TIMEOUT_S + 30)
    events = await all_events(server.client, tenant, done["id"])
    calls = [e["data"]["line"] for e in events if e["kind"] == "log" and e["data"]["line"].startswith("call")]
    assert (done["status"], done["failure"]["reason"]) == ("failed", "budget_exceeded"), (done, events[-20:])
    assert calls[:2] == ["call 200", "call 402"], calls
    assert len(calls) <= 3, "the run went on calling after its budget was spent"
    assert model_calls(fake) == 1
    assert _time(done["finished_at"]) - _time(done["started_at"]) < TIMEOUT_S / 2
    artifacts = {item["name"]: item for item in done["artifacts"]}
    assert "partial.txt" in (await server.client.get(artifacts["changes.patch"]["download_url"])).text


def _time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
