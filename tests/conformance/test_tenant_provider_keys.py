"""A tenant's own provider key and URL reach the provider through the REAL CLI's run, and only that
tenant's runs use them: another tenant's run still goes out with the server's key."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agent_installs import INSTALL_DIR, require_installed
from tests.conftest import MakeServer, Server
from tests.fakes.provider import FakeProvider
from tests.integration.helpers import TERMINAL, all_events, wait_for_status
from tests.sandboxes import require_bwrap, sandbox_settings

SERVER_KEY = "sk-server-key-for-everyone-41d2"
TENANT_KEY = "sk-tenant-a-own-key-77c1"
AGENT = "codex"  # the quickest CLI to start; the gateway path is the same for every agent
TIMEOUT_S = 90


@pytest.fixture(scope="module")
def fakes() -> Iterator[tuple[FakeProvider, FakeProvider]]:
    with FakeProvider() as server_side, FakeProvider() as tenant_side:
        yield server_side, tenant_side


@pytest.fixture
async def server(make_server: MakeServer, fakes: tuple[FakeProvider, FakeProvider], tmp_path: Path) -> Server:
    require_bwrap()
    require_installed(AGENT)
    for fake in fakes:
        fake.reset()
    providers = {"openai": {"base_url": fakes[0].base_url, "api_key": SERVER_KEY}}
    return await make_server(
        data_dir=tmp_path / "data", sandbox=sandbox_settings(), providers=providers,
        agents={"install_dir": INSTALL_DIR}, limits={"requests_per_s": 0},
    )  # fmt: skip


async def run(server: Server, headers: dict[str, str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    body = {"agent": AGENT, "task": "Create the file FILE=/workspace/hello.txt", "timeout_s": TIMEOUT_S}
    response = await server.client.post("/v1/dispatches", json=body, headers=headers)
    assert response.status_code == 202, response.text
    done = await wait_for_status(server.client, headers, response.json()["id"], TERMINAL, TIMEOUT_S + 10)
    return done, await all_events(server.client, headers, done["id"])


@pytest.mark.slow
async def test_each_tenants_run_goes_out_with_its_own_key(
    server: Server, fakes: tuple[FakeProvider, FakeProvider]
) -> None:
    own, other = await server.new_tenant(), await server.new_tenant()
    response = await server.client.patch("/v1/providers/openai", json={"api_key": TENANT_KEY}, headers=own)
    assert response.status_code == 200, response.text
    done, events = await run(server, own)
    assert done["status"] == "succeeded", done
    assert fakes[0].requests
    assert {request.api_key for request in fakes[0].requests} == {TENANT_KEY}
    assert TENANT_KEY not in str(events) + str(done)
    fakes[0].reset()
    done, _ = await run(server, other)
    assert done["status"] == "succeeded", done
    assert {request.api_key for request in fakes[0].requests} == {SERVER_KEY}


@pytest.mark.slow
async def test_an_admin_set_url_takes_the_tenants_calls_without_the_server_key(
    server: Server, fakes: tuple[FakeProvider, FakeProvider]
) -> None:
    admin = await server.new_tenant(admin=True)
    moved = {"base_url": fakes[1].base_url}
    response = await server.client.patch("/v1/providers/openai", json=moved, headers=admin)
    assert response.status_code == 200, response.text
    done, _ = await run(server, admin)
    assert done["status"] == "succeeded", done
    assert fakes[0].requests == []
    assert fakes[1].requests
    assert {request.api_key for request in fakes[1].requests} == {None}, "the server key followed the URL"
