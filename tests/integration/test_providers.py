"""Tenants' own provider keys and URLs: set over the API, stored encrypted, never shown, used at launch."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from outpost.db.tables import secrets
from outpost.secrets.box import SecretUnreadable
from outpost.secrets.master_key import encode_master_key
from tests.conftest import MakeServer, Server
from tests.integration.api_checks import assert_invalid, assert_problem

SERVER_KEY = "sk-server-key-0a1b2c3d"
TENANT_KEY = "sk-tenant-own-key-9f8e7d6c"
PROVIDERS = {"openai": {"base_url": "http://127.0.0.1:9/openai", "api_key": SERVER_KEY}}


@pytest.fixture
async def quiet(make_server: MakeServer) -> Server:
    return await make_server(worker={"enabled": False}, limits={"requests_per_s": 0}, providers=PROVIDERS)


async def patch(server: Server, headers: dict[str, str], name: str, **body: Any) -> dict[str, Any]:
    response = await server.client.patch(f"/v1/providers/{name}", json=body, headers=headers)
    assert response.status_code == 200, response.text
    assert TENANT_KEY not in response.text
    found: dict[str, Any] = response.json()
    return found


async def listed(server: Server, headers: dict[str, str]) -> dict[str, dict[str, Any]]:
    response = await server.client.get("/v1/providers", headers=headers)
    assert response.status_code == 200, response.text
    assert TENANT_KEY not in response.text
    return {item["name"]: item for item in response.json()}


async def test_a_tenant_sees_every_provider_with_whose_key_is_sent(quiet: Server) -> None:
    providers = await listed(quiet, await quiet.new_tenant())
    assert {"anthropic", "openai", "gemini", "xai", "deepseek"} <= set(providers)
    assert providers["openai"] == {
        "name": "openai", "base_url": "http://127.0.0.1:9/openai", "base_url_source": "server",
        "api_key_source": "server", "api_key_version": None, "updated_at": None,
    }  # fmt: skip
    assert providers["anthropic"]["api_key_source"] is None  # no server key configured for it


async def test_a_tenant_key_is_stored_encrypted_versioned_and_never_returned(quiet: Server) -> None:
    headers = await quiet.new_tenant()
    first = await patch(quiet, headers, "openai", api_key=TENANT_KEY)
    assert (first["api_key_source"], first["api_key_version"]) == ("tenant", 1)
    second = await patch(quiet, headers, "openai", api_key=TENANT_KEY + "-rotated")
    assert second["api_key_version"] == 2
    async with quiet.container.store.read() as conn:
        rows = (await conn.execute(select(secrets).order_by(secrets.c.version))).mappings().all()
    assert [(row["version"], row["retired_at"] is not None) for row in rows] == [(1, True), (2, False)]
    assert rows[0]["sealed"] == b""  # a retired version's ciphertext is erased
    assert all(TENANT_KEY.encode() not in row["sealed"] for row in rows)
    database = Path(quiet.container.settings.resolved_database_url.split("///", 1)[-1])
    if quiet.container.store.dialect == "sqlite":  # not even the file holds the key in clear
        assert TENANT_KEY.encode() not in await asyncio.to_thread(database.read_bytes)
    tenant_id = await _tenant_id(quiet, headers)
    upstream = await quiet.container.providers.upstream_for(tenant_id, "openai")
    assert upstream is not None
    assert upstream.api_key is not None
    assert upstream.api_key.get_secret_value() == TENANT_KEY + "-rotated"
    assert upstream.base_url == "http://127.0.0.1:9/openai"


async def test_clearing_the_key_brings_back_the_server_key(quiet: Server) -> None:
    headers = await quiet.new_tenant()
    await patch(quiet, headers, "openai", api_key=TENANT_KEY)
    cleared = await patch(quiet, headers, "openai", api_key=None)
    assert (cleared["api_key_source"], cleared["api_key_version"], cleared["updated_at"]) == (
        "server", None, None,
    )  # fmt: skip
    upstream = await quiet.container.providers.upstream_for(await _tenant_id(quiet, headers), "openai")
    assert upstream is not None
    assert upstream.api_key is not None
    assert upstream.api_key.get_secret_value() == SERVER_KEY


async def test_only_admin_keys_move_a_tenants_calls_and_the_server_key_never_follows(quiet: Server) -> None:
    tenant = await quiet.new_tenant()
    response = await quiet.client.patch(
        "/v1/providers/openai", json={"base_url": "https://proxy.example"}, headers=tenant
    )
    assert_problem(response, 403)
    admin = await quiet.new_tenant(admin=True)
    moved = await patch(quiet, admin, "openai", base_url="https://proxy.example/v1/")
    assert (moved["base_url"], moved["base_url_source"], moved["api_key_source"]) == (
        "https://proxy.example/v1", "tenant", None,
    )  # fmt: skip
    upstream = await quiet.container.providers.upstream_for(await _tenant_id(quiet, admin), "openai")
    assert upstream is not None
    assert (upstream.base_url, upstream.api_key) == ("https://proxy.example/v1", None)
    with_key = await patch(quiet, admin, "openai", api_key=TENANT_KEY)
    assert with_key["api_key_source"] == "tenant"


async def test_tenants_do_not_see_or_use_each_others_settings(quiet: Server) -> None:
    first, second = await quiet.new_tenant(), await quiet.new_tenant()
    await patch(quiet, first, "openai", api_key=TENANT_KEY)
    assert (await listed(quiet, second))["openai"]["api_key_source"] == "server"
    assert_problem(await quiet.client.delete("/v1/providers/openai", headers=second), 404)
    upstream = await quiet.container.providers.upstream_for(await _tenant_id(quiet, second), "openai")
    assert upstream is not None
    assert upstream.api_key is not None
    assert upstream.api_key.get_secret_value() == SERVER_KEY


async def test_reset_drops_the_tenants_settings_once(quiet: Server) -> None:
    headers = await quiet.new_tenant()
    await patch(quiet, headers, "openai", api_key=TENANT_KEY)
    assert (await quiet.client.delete("/v1/providers/openai", headers=headers)).status_code == 204
    assert (await listed(quiet, headers))["openai"]["api_key_source"] == "server"
    assert_problem(await quiet.client.delete("/v1/providers/openai", headers=headers), 404)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"api_key": ""}, "api_key"),
        ({"api_key": "sk-with space"}, "api_key"),
        ({"api_key": "sk-line\r\nX-Injected: 1"}, "api_key"),
        ({"api_key": "sk-ünïcode"}, "api_key"),
        ({"api_key": "k" * 4097}, "api_key"),
        ({"api_key": 12345}, "api_key"),
        ({"api_key": ["sk-a"]}, "api_key"),
        ({"base_url": "ftp://host/"}, "base_url"),
        ({"base_url": "https://user:pw@host/"}, "base_url"),
        ({"base_url": "https://host/?q=1"}, "base_url"),
        ({"base_url": "https://host/#frag"}, "base_url"),
        ({"base_url": "https://host:99999/"}, "base_url"),
        ({"base_url": "/relative"}, "base_url"),
        ({"base_url": "https://host/\u202e"}, "base_url"),
        ({"base_url": "https://" + "h" * 2100}, "base_url"),
        ({"other": 1}, "other"),
    ],
)
async def test_bad_settings_are_refused_without_echoing_them(
    quiet: Server, body: dict[str, Any], field: str
) -> None:
    admin = await quiet.new_tenant(admin=True)
    response = await quiet.client.patch("/v1/providers/openai", json=body, headers=admin)
    problem = assert_invalid(response, field)
    for value in body.values():
        if isinstance(value, str) and len(value) > 3:
            assert value not in str(problem)
    assert (await listed(quiet, admin))["openai"]["base_url_source"] == "server"


async def test_unknown_providers_and_missing_keys_get_clear_problems(quiet: Server) -> None:
    headers = await quiet.new_tenant()
    for name in ("nope", "..", "OPENAI"):
        response = await quiet.client.patch(f"/v1/providers/{name}", json={"api_key": "k"}, headers=headers)
        assert response.status_code in (404, 405), response.text
    assert_problem(await quiet.client.get("/v1/providers/nope", headers=headers), 404)
    assert_problem(await quiet.client.get("/v1/providers"), 401)


async def test_a_server_started_with_another_master_key_refuses_to_start(
    make_server: MakeServer, tmp_path: Path
) -> None:
    first = await make_server(worker={"enabled": False}, providers=PROVIDERS)
    headers = await first.new_tenant()
    await patch(first, headers, "openai", api_key=TENANT_KEY)
    other_key = encode_master_key(b"\x07" * 32)
    with pytest.raises(SecretUnreadable, match="another master key"):
        await make_server(worker={"enabled": False}, secrets={"master_key": other_key})


async def test_a_tampered_secret_row_fails_the_lookup_not_with_garbage(quiet: Server) -> None:
    headers = await quiet.new_tenant()
    await patch(quiet, headers, "openai", api_key=TENANT_KEY)
    async with quiet.container.store.write() as conn:
        row = (await conn.execute(select(secrets))).mappings().one()
        flipped = bytes([*row["sealed"][:-1], row["sealed"][-1] ^ 1])
        await conn.execute(update(secrets).values(sealed=flipped))
    with pytest.raises(SecretUnreadable, match="does not decrypt"):
        await quiet.container.providers.upstream_for(await _tenant_id(quiet, headers), "openai")


async def _tenant_id(server: Server, headers: dict[str, str]) -> str:
    token = headers["Authorization"].removeprefix("Bearer ")
    return (await server.container.keys.authenticate(token)).tenant_id
