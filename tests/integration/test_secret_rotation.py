"""A tenant rotates its provider key or git credential with an overlap: the new version is in force for
new runs, the old one stays stored until it is retired, and retiring the new one takes the rotation back.
No response ever holds a secret."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import select

from outpost.db.tables import secrets
from tests.agent_installs import INSTALL_DIR, require_installed
from tests.conftest import MakeServer, Server
from tests.fakes.provider import FakeProvider
from tests.integration.api_checks import assert_invalid, assert_problem
from tests.integration.helpers import TERMINAL, all_events, submit, wait_for_status

SERVER_KEY = "sk-server-key-for-rotation"
OLD_KEY, NEW_KEY = "sk-tenant-old-key-0a1b2c3d", "sk-tenant-new-key-4e5f6a7b"
OLD_TOKEN, NEW_TOKEN = "ghp_oldTenantToken0a1b2c", "ghp_newTenantToken3d4e5f"
PROVIDERS = {"openai": {"base_url": "http://127.0.0.1:9/openai", "api_key": SERVER_KEY}}
SECRETS = (SERVER_KEY, OLD_KEY, NEW_KEY, OLD_TOKEN, NEW_TOKEN)


@pytest.fixture
async def quiet(make_server: MakeServer) -> Server:
    return await make_server(worker={"enabled": False}, limits={"requests_per_s": 0}, providers=PROVIDERS)


async def call(server: Server, method: str, path: str, headers: dict[str, str], **body: Any) -> Any:
    response = await server.client.request(method, path, json=body or None, headers=headers)
    for secret in SECRETS:
        assert secret not in response.text
    if response.status_code == 204:
        return None
    assert response.status_code == 200, response.text
    return response.json()


async def provider_key(server: Server, headers: dict[str, str]) -> str | None:
    token = headers["Authorization"].removeprefix("Bearer ")
    tenant_id = (await server.container.keys.authenticate(token)).tenant_id
    upstream = await server.container.providers.upstream_for(tenant_id, "openai")
    assert upstream is not None
    return upstream.api_key.get_secret_value() if upstream.api_key else None


async def git_token(server: Server, headers: dict[str, str]) -> str | None:
    token = headers["Authorization"].removeprefix("Bearer ")
    tenant_id = (await server.container.keys.authenticate(token)).tenant_id
    credential = await server.container.git_credentials.credential_for(tenant_id, "github.com")
    return credential.password if credential else None


def versions(listing: dict[str, Any]) -> list[tuple[int, bool]]:
    return [(item["version"], item["in_force"]) for item in listing["items"]]


async def test_a_provider_key_rotates_with_an_overlap_and_the_old_one_is_retired_explicitly(
    quiet: Server,
) -> None:
    headers = await quiet.new_tenant()
    await call(quiet, "PATCH", "/v1/providers/openai", headers, api_key=OLD_KEY)
    rotated = await call(
        quiet, "PATCH", "/v1/providers/openai", headers, api_key=NEW_KEY, retire_previous=False
    )
    assert (rotated["api_key_source"], rotated["api_key_version"]) == ("tenant", 2)
    listing = await call(quiet, "GET", "/v1/providers/openai/key-versions", headers)
    assert versions(listing) == [(2, True), (1, False)]
    assert set(listing["items"][0]) == {"version", "created_at", "in_force"}
    assert await provider_key(quiet, headers) == NEW_KEY  # new runs get the new key

    await call(quiet, "DELETE", "/v1/providers/openai/key-versions/1", headers)  # the rotation is done
    assert versions(await call(quiet, "GET", "/v1/providers/openai/key-versions", headers)) == [(2, True)]
    assert await provider_key(quiet, headers) == NEW_KEY
    async with quiet.container.store.read() as conn:
        rows = (await conn.execute(select(secrets).order_by(secrets.c.version))).mappings().all()
    assert [(row["version"], row["retired_at"] is not None, row["sealed"] == b"") for row in rows] == [
        (1, True, True), (2, False, False),
    ]  # fmt: skip
    assert_problem(await quiet.client.delete("/v1/providers/openai/key-versions/1", headers=headers), 404)


async def test_retiring_the_new_version_takes_the_rotation_back(quiet: Server) -> None:
    headers = await quiet.new_tenant()
    await call(quiet, "PATCH", "/v1/providers/openai", headers, api_key=OLD_KEY)
    await call(quiet, "PATCH", "/v1/providers/openai", headers, api_key=NEW_KEY, retire_previous=False)
    await call(quiet, "DELETE", "/v1/providers/openai/key-versions/2", headers)
    assert await provider_key(quiet, headers) == OLD_KEY
    provider = await call(quiet, "GET", "/v1/providers/openai", headers)
    assert (provider["api_key_source"], provider["api_key_version"]) == ("tenant", 1)
    await call(quiet, "DELETE", "/v1/providers/openai/key-versions/1", headers)  # the last one: server's key
    provider = await call(quiet, "GET", "/v1/providers/openai", headers)
    assert (provider["api_key_source"], provider["api_key_version"], provider["updated_at"]) == (
        "server", None, None,
    )  # fmt: skip
    assert await provider_key(quiet, headers) == SERVER_KEY
    assert versions(await call(quiet, "GET", "/v1/providers/openai/key-versions", headers)) == []


async def test_setting_a_key_without_keeping_the_previous_retires_it_as_before(quiet: Server) -> None:
    headers = await quiet.new_tenant()
    await call(quiet, "PATCH", "/v1/providers/openai", headers, api_key=OLD_KEY, retire_previous=False)
    await call(quiet, "PATCH", "/v1/providers/openai", headers, api_key=NEW_KEY)
    assert versions(await call(quiet, "GET", "/v1/providers/openai/key-versions", headers)) == [(2, True)]


async def test_a_git_credential_rotates_with_an_overlap(quiet: Server) -> None:
    headers = await quiet.new_tenant()
    url = f"/v1/git-credentials/{quote('github.com')}"
    await call(quiet, "PUT", url, headers, token=OLD_TOKEN)
    await call(quiet, "PUT", url, headers, token=NEW_TOKEN, username="bot", retire_previous=False)
    assert versions(await call(quiet, "GET", f"{url}/versions", headers)) == [(2, True), (1, False)]
    assert await git_token(quiet, headers) == NEW_TOKEN
    await call(quiet, "DELETE", f"{url}/versions/2", headers)
    assert await git_token(quiet, headers) == OLD_TOKEN  # taken back: the old credential is in force
    listed = await call(quiet, "GET", "/v1/git-credentials", headers)
    assert [(item["host"], item["username"]) for item in listed["items"]] == [
        ("github.com", "x-access-token")
    ]
    await call(quiet, "DELETE", f"{url}/versions/1", headers)
    assert await git_token(quiet, headers) is None
    assert_problem(await quiet.client.get(f"{url}/versions", headers=headers), 404)
    assert_problem(await quiet.client.delete(f"{url}/versions/1", headers=headers), 404)


async def test_another_tenant_can_neither_see_nor_retire_the_versions(quiet: Server) -> None:
    owner, other = await quiet.new_tenant(), await quiet.new_tenant()
    await call(quiet, "PATCH", "/v1/providers/openai", owner, api_key=OLD_KEY)
    await call(quiet, "PUT", "/v1/git-credentials/github.com", owner, token=OLD_TOKEN)
    assert versions(await call(quiet, "GET", "/v1/providers/openai/key-versions", other)) == []
    assert_problem(await quiet.client.delete("/v1/providers/openai/key-versions/1", headers=other), 404)
    assert_problem(await quiet.client.get("/v1/git-credentials/github.com/versions", headers=other), 404)
    assert_problem(await quiet.client.delete("/v1/git-credentials/github.com/versions/1", headers=other), 404)
    assert await provider_key(quiet, owner) == OLD_KEY
    assert await git_token(quiet, owner) == OLD_TOKEN


async def test_bad_rotation_requests_get_clear_problems(quiet: Server) -> None:
    headers = await quiet.new_tenant()
    response = await quiet.client.patch(
        "/v1/providers/openai", json={"retire_previous": False}, headers=headers
    )
    assert (
        "retire_previous applies only when api_key sets a new key" in assert_problem(response, 422)["detail"]
    )
    for bad in ("0", "-1", "2147483648", "x", "1.5"):
        response = await quiet.client.delete(f"/v1/providers/openai/key-versions/{bad}", headers=headers)
        assert_invalid(response, "version")
    assert_problem(await quiet.client.get("/v1/providers/nope/key-versions", headers=headers), 404)
    assert_problem(await quiet.client.delete("/v1/providers/nope/key-versions/1", headers=headers), 404)
    response = await quiet.client.put(
        "/v1/git-credentials/github.com",
        json={"token": OLD_TOKEN, "retire_previous": "sometimes"},
        headers=headers,
    )
    assert_invalid(response, "retire_previous")
    assert OLD_TOKEN not in response.text
    assert_problem(await quiet.client.get("/v1/providers/openai/key-versions"), 401)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProvider]:
    with FakeProvider() as provider:
        yield provider


async def test_runs_through_the_gateway_send_the_key_in_force_across_a_rotation(
    make_server: MakeServer, fake: FakeProvider
) -> None:
    require_installed("codex")
    fake.reset()
    server = await make_server(
        providers={"openai": {"base_url": fake.base_url, "api_key": SERVER_KEY}},
        agents={"install_dir": INSTALL_DIR}, limits={"requests_per_s": 0},
    )  # fmt: skip
    headers = await server.new_tenant()

    async def key_a_run_sends() -> str | None:
        fake.reset()
        created = await submit(server.client, headers, "Create the file FILE=/workspace/a.txt", agent="codex")
        done = await wait_for_status(server.client, headers, created["id"], TERMINAL, 90)
        assert done["status"] == "succeeded", done
        for secret in SECRETS:
            assert secret not in str(await all_events(server.client, headers, created["id"]))
        assert len({request.api_key for request in fake.requests}) == 1
        return fake.requests[-1].api_key

    await call(server, "PATCH", "/v1/providers/openai", headers, api_key=OLD_KEY)
    await call(server, "PATCH", "/v1/providers/openai", headers, api_key=NEW_KEY, retire_previous=False)
    assert await key_a_run_sends() == NEW_KEY
    await call(server, "DELETE", "/v1/providers/openai/key-versions/2", headers)  # taken back
    assert await key_a_run_sends() == OLD_KEY
    await call(server, "DELETE", "/v1/providers/openai/key-versions/1", headers)
    assert await key_a_run_sends() == SERVER_KEY
