"""Dispatches and provider quotas over the API: a dispatch needing an account out of quota waits queued
and says why, runs once the quota ends, or fails over when its request allows it (to another model, or
to the server's key when the tenant's own is out of quota); bad `failover` is 422."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from outpost.db.types import utc_now
from outpost.domain.quotas import SERVER_ACCOUNT
from outpost.gateway.upstream_errors import ProviderFailure
from tests.agent_installs import INSTALL_DIR, require_installed
from tests.conftest import MakeServer, Server
from tests.fakes.provider import FakeProvider
from tests.integration.api_checks import assert_invalid, list_all
from tests.integration.helpers import TERMINAL, all_events, wait_for_status

TASK = "Create the file FILE=/workspace/hello.txt"
SERVER_KEY = "sk-server"
TENANT_KEY = "sk-tenant-own-key-5e0b"
QUOTA_S = 2.0


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProvider]:
    with FakeProvider() as provider:
        yield provider


@pytest.fixture
async def server(make_server: MakeServer, fake: FakeProvider, tmp_path: Path) -> Server:
    fake.reset()
    providers = {name: {"base_url": fake.base_url, "api_key": SERVER_KEY} for name in ("anthropic", "openai")}
    return await make_server(
        providers=providers, agents={"install_dir": INSTALL_DIR}, limits={"requests_per_s": 0}
    )


async def exhaust(server: Server, provider: str, seconds: float, account: str = SERVER_ACCOUNT) -> datetime:
    """Record `account` (the server's) at `provider` out of quota, as a run's gateway callback does."""
    until = utc_now() + timedelta(seconds=seconds)
    failure = ProviderFailure("quota", 429, "rate limit reached", until)
    server.container.quotas.failed(account, provider, failure)
    await server.container.quotas.flush()
    return until


async def post(server: Server, headers: dict[str, str], **fields: Any) -> Any:
    body = {"task": TASK, "timeout_s": 60, **fields}
    return await server.client.post("/v1/dispatches", json=body, headers=headers)


async def status_events(server: Server, headers: dict[str, str], dispatch_id: str) -> list[dict[str, Any]]:
    events = await all_events(server.client, headers, dispatch_id)
    return [event for event in events if event["kind"] == "status"]


async def wait_for_reason(server: Server, headers: dict[str, str], dispatch_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while True:
        body: dict[str, Any] = (
            await server.client.get(f"/v1/dispatches/{dispatch_id}", headers=headers)
        ).json()
        if body["queue_reason"] is not None or body["status"] != "queued":
            return body
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.02)


async def test_a_dispatch_needing_an_account_out_of_quota_waits_with_the_reason_then_runs_after_it(
    server: Server,
) -> None:
    require_installed("codex")
    tenant = await server.new_tenant()
    until = await exhaust(server, "openai", QUOTA_S)
    response = await post(server, tenant, agent="codex")
    assert response.status_code == 202, response.text
    dispatch_id = response.json()["id"]
    waiting = await wait_for_reason(server, tenant, dispatch_id)
    assert waiting["status"] == "queued"
    assert waiting["queue_reason"].startswith("openai quota exhausted until ")
    assert datetime.fromisoformat(waiting["not_before"]) == until
    done = await wait_for_status(server.client, tenant, dispatch_id, TERMINAL, 90)
    assert (done["status"], done["queue_reason"]) == ("succeeded", None), done
    statuses = await status_events(server, tenant, dispatch_id)
    held = [event for event in statuses if event["data"].get("held") == "quota"]
    assert len(held) == 1, statuses
    assert held[0]["data"]["note"] == waiting["queue_reason"]
    claimed_at = next(e["created_at"] for e in statuses if e["data"]["status"] == "provisioning")
    assert datetime.fromisoformat(claimed_at) >= until


async def test_failover_runs_the_dispatch_on_the_fallback_tier_and_says_so(
    server: Server, fake: FakeProvider
) -> None:
    require_installed("aider")
    tenant = await server.new_tenant()
    await exhaust(server, "anthropic", 600)
    response = await post(
        server, tenant, agent="aider", model="claude-sonnet-5-5", failover={"tiers": ["fast"]}
    )
    assert response.status_code == 202, response.text
    created = response.json()
    assert created["failover"] == {"models": [], "tiers": ["fast"], "accounts": False}
    assert created["failover_account"] is None
    done = await wait_for_status(server.client, tenant, created["id"], TERMINAL, 90)
    assert done["status"] == "succeeded", done
    assert {request.body["model"] for request in fake.requests if request.body} == {"gpt-6-luna"}
    # aider's vendors in order: anthropic's fast model shares the exhausted account; openai's does not.
    assert (done["model"], done["tier"]) == ("gpt-6-luna", "fast")
    provisioning = next(
        e for e in await status_events(server, tenant, created["id"]) if e["data"]["status"] == "provisioning"
    )
    assert "anthropic quota exhausted" in provisioning["data"]["note"]
    assert "gpt-6-luna (openai)" in provisioning["data"]["note"]
    assert not [request for request in fake.requests if "/messages" in request.path]  # nothing to anthropic


async def test_a_tenants_own_key_out_of_quota_fails_over_to_the_servers_key_only_when_allowed(
    server: Server, fake: FakeProvider
) -> None:
    require_installed("codex")
    tenant = await server.new_tenant()
    response = await server.client.patch("/v1/providers/openai", json={"api_key": TENANT_KEY}, headers=tenant)
    assert response.status_code == 200, response.text
    token = tenant["Authorization"].removeprefix("Bearer ")
    tenant_id = (await server.container.keys.authenticate(token)).tenant_id
    await exhaust(server, "openai", 600, account=tenant_id)
    waits = (await post(server, tenant, agent="codex")).json()["id"]
    response = await post(server, tenant, agent="codex", failover={"accounts": True})
    assert response.status_code == 202, response.text
    assert response.json()["failover"] == {"models": [], "tiers": [], "accounts": True}
    done = await wait_for_status(server.client, tenant, response.json()["id"], TERMINAL, 90)
    assert (done["status"], done["failover_account"]) == ("succeeded", "server"), done
    assert fake.requests
    assert {request.api_key for request in fake.requests} == {SERVER_KEY}
    events = await all_events(server.client, tenant, done["id"])
    provisioning = next(e for e in events if e["kind"] == "status" and e["data"]["status"] == "provisioning")
    assert "(this tenant's own key): running on the server's key instead" in provisioning["data"]["note"]
    assert TENANT_KEY not in str(events) + str(done)
    assert SERVER_KEY not in str(events) + str(done)
    waiting = await wait_for_reason(server, tenant, waits)
    assert waiting["status"] == "queued", waiting
    assert "this tenant's own key" in waiting["queue_reason"]
    assert waiting["failover_account"] is None


BAD_FAILOVER = [
    ({"agent": "shell", "failover": {"tiers": ["fast"]}}, "failover"),
    ({"agent": "shell", "failover": {"accounts": True}}, "failover.accounts"),
    ({"agent": "aider", "failover": {"accounts": False}}, "failover"),
    ({"agent": "aider", "failover": {"accounts": "sometimes"}}, "failover.accounts"),
    ({"agent": "claude", "failover": {"tiers": ["fast"]}}, "failover.tiers"),
    (
        {"agent": "aider", "model": "claude-sonnet-5-5", "failover": {"models": ["claude-haiku-5-5"]}},
        "failover.models",
    ),
    ({"agent": "aider", "failover": {"models": ["no-such-model"]}}, "failover.models"),
    ({"agent": "aider", "failover": {}}, "failover"),
    ({"agent": "aider", "failover": {"models": [], "tiers": []}}, "failover"),
    ({"agent": "aider", "failover": {"tiers": ["fast", "fast"]}}, "failover.tiers"),
    ({"agent": "aider", "failover": {"tiers": ["cheapest"]}}, "failover.tiers.0"),
    ({"agent": "aider", "failover": {"models": ["gpt-6-luna"] * 2}}, "failover.models"),
    ({"agent": "aider", "failover": {"models": ["a", "b", "c", "d", "e"]}}, "failover.models"),
    ({"agent": "aider", "failover": {"accounts": ["server"]}}, "failover.accounts"),
    ({"agent": "aider", "failover": ["fast"]}, "failover"),
]


@pytest.mark.parametrize(("fields", "field"), BAD_FAILOVER)
async def test_bad_failover_is_a_422_naming_the_field_and_stores_nothing(
    server: Server, fields: dict[str, Any], field: str
) -> None:
    tenant = await server.new_tenant()
    assert_invalid(await post(server, tenant, **fields), field)
    assert await list_all(server.client, tenant) == []


async def test_a_running_dispatchs_retry_while_its_account_is_out_of_quota_never_reaches_the_provider(
    server: Server, fake: FakeProvider
) -> None:
    require_installed("codex")
    tenant = await server.new_tenant()
    fake.fail_next(429, retry_after_s=1)
    dispatch_id = (await post(server, tenant, agent="codex")).json()["id"]
    quota_event = await wait_for_event(server, tenant, dispatch_id, "provider_error")
    assert quota_event["data"]["kind"] == "quota"
    first_until = datetime.fromisoformat(quota_event["data"]["retry_at"])
    assert await server.container.quotas.exhausted_until(SERVER_ACCOUNT, "openai") == first_until
    # Another run of the same account meets a longer back-off before this run's CLI retries (it waits
    # the first one's second, and retries once): the gateway answers that retry itself.
    until = await exhaust(server, "openai", 2 * QUOTA_S)
    done = await wait_for_status(server.client, tenant, dispatch_id, TERMINAL, 90)
    assert utc_now() < until  # it ended within the quota, on the gateway's answer
    assert len(fake.requests) == 1, [request.path for request in fake.requests]
    assert done["status"] == "failed"
    assert done["failure"]["reason"] == "quota"
    agent_errors = [e for e in await all_events(server.client, tenant, dispatch_id) if e["kind"] == "agent"]
    assert any("429" in str(event["data"].get("message")) for event in agent_errors)


async def wait_for_event(
    server: Server, headers: dict[str, str], dispatch_id: str, kind: str
) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        found = [e for e in await all_events(server.client, headers, dispatch_id) if e["kind"] == kind]
        if found:
            return found[0]
        assert time.monotonic() < deadline, f"no {kind} event"
        await asyncio.sleep(0.02)
