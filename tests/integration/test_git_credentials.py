"""Tenants' git credentials: set by host, stored encrypted, never returned, read by the worker."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import select, update

from outpost.db.tables import secrets
from outpost.secrets.box import SecretUnreadable
from outpost.services.git_credentials import credential_host
from outpost.workspaces.repo_url import RepoUrl, parse_repo_url
from outpost.workspaces.settings import GitSettings
from tests.conftest import MakeServer, Server
from tests.integration.api_checks import assert_invalid, assert_problem

TOKEN = "ghp_tenantOwnToken0a1b2c3d4e5f"
OTHER_TOKEN = "glpat-rotatedToken9f8e7d6c"


@pytest.fixture
async def quiet(make_server: MakeServer) -> Server:
    return await make_server(worker={"enabled": False}, limits={"requests_per_s": 0})


def url(host: str) -> str:
    return f"/v1/git-credentials/{quote(host, safe='')}"


async def put(server: Server, headers: dict[str, str], host: str, **body: Any) -> dict[str, Any]:
    response = await server.client.put(url(host), json=body, headers=headers)
    assert response.status_code == 200, response.text
    assert TOKEN not in response.text
    assert OTHER_TOKEN not in response.text
    found: dict[str, Any] = response.json()
    return found


async def listed(server: Server, headers: dict[str, str]) -> list[dict[str, Any]]:
    response = await server.client.get("/v1/git-credentials", headers=headers)
    assert response.status_code == 200, response.text
    assert TOKEN not in response.text
    assert OTHER_TOKEN not in response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def test_a_credential_is_set_listed_by_host_and_its_token_never_returned(quiet: Server) -> None:
    headers = await quiet.new_tenant()
    assert await listed(quiet, headers) == []
    stored = await put(quiet, headers, "github.com", token=TOKEN)
    assert set(stored) == {"host", "username", "updated_at"}
    assert (stored["host"], stored["username"]) == ("github.com", "x-access-token")
    await put(quiet, headers, "git.example:8443", username="ci-bot", token=OTHER_TOKEN)
    rows = await listed(quiet, headers)
    assert [(row["host"], row["username"]) for row in rows] == [
        ("git.example:8443", "ci-bot"), ("github.com", "x-access-token"),
    ]  # fmt: skip
    assert rows[1] == stored


async def test_setting_again_replaces_the_credential_and_retires_the_old_one(quiet: Server) -> None:
    headers = await quiet.new_tenant()
    await put(quiet, headers, "github.com", token=TOKEN)
    await put(quiet, headers, "github.com", username="bot", token=OTHER_TOKEN)
    assert [(row["host"], row["username"]) for row in await listed(quiet, headers)] == [("github.com", "bot")]
    async with quiet.container.store.read() as conn:
        rows = (await conn.execute(select(secrets).order_by(secrets.c.version))).mappings().all()
    assert [(row["name"], row["version"], row["retired_at"] is not None) for row in rows] == [
        ("git/github.com/credential", 1, True), ("git/github.com/credential", 2, False),
    ]  # fmt: skip
    assert rows[0]["sealed"] == b""  # a retired version's ciphertext is erased
    assert all(token.encode() not in row["sealed"] for row in rows for token in (TOKEN, OTHER_TOKEN))
    if quiet.container.store.dialect == "sqlite":  # not even the database file holds a token in clear
        database = Path(quiet.container.settings.resolved_database_url.split("///", 1)[-1])
        stored = await asyncio.to_thread(database.read_bytes)
        assert TOKEN.encode() not in stored
        assert OTHER_TOKEN.encode() not in stored
    credential = await quiet.container.git_credentials.credential_for(
        await _tenant_id(quiet, headers), "github.com"
    )
    assert credential is not None
    assert (credential.username, credential.password) == ("bot", OTHER_TOKEN)
    assert OTHER_TOKEN not in repr(credential)


async def test_delete_drops_the_credential_once(quiet: Server) -> None:
    headers = await quiet.new_tenant()
    await put(quiet, headers, "github.com", token=TOKEN)
    assert (await quiet.client.delete(url("github.com"), headers=headers)).status_code == 204
    assert await listed(quiet, headers) == []
    tenant_id = await _tenant_id(quiet, headers)
    assert await quiet.container.git_credentials.credential_for(tenant_id, "github.com") is None
    assert_problem(await quiet.client.delete(url("github.com"), headers=headers), 404)


async def test_tenants_do_not_see_use_or_delete_each_others_credentials(quiet: Server) -> None:
    first, second = await quiet.new_tenant(), await quiet.new_tenant()
    await put(quiet, first, "github.com", token=TOKEN)
    assert await listed(quiet, second) == []
    assert_problem(await quiet.client.delete(url("github.com"), headers=second), 404)
    service = quiet.container.git_credentials
    assert await service.credential_for(await _tenant_id(quiet, second), "github.com") is None
    own = await service.credential_for(await _tenant_id(quiet, first), "github.com")
    assert own is not None
    assert own.password == TOKEN


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("GitHub.COM", "github.com"),
        ("github.com.:443", "github.com"),
        ("git.example:8443", "git.example:8443"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("10.0.0.7:3000", "10.0.0.7:3000"),
        ("[2001:DB8:0::1]:8443", "[2001:db8::1]:8443"),
    ],
)
async def test_hosts_are_stored_in_the_spelling_the_worker_looks_up(
    quiet: Server, given: str, stored: str
) -> None:
    headers = await quiet.new_tenant()
    assert (await put(quiet, headers, given, token=TOKEN))["host"] == stored
    assert [row["host"] for row in await listed(quiet, headers)] == [stored]
    assert (await quiet.client.delete(url(given), headers=headers)).status_code == 204


def test_the_worker_spells_a_repository_host_as_credentials_are_stored() -> None:
    settings = GitSettings()
    assert credential_host(parse_repo_url("https://GitHub.com:443/o/r.git", settings)) == "github.com"
    assert credential_host(parse_repo_url("https://git.example:8443/o/r", settings)) == "git.example:8443"
    assert credential_host(RepoUrl("https://10.0.0.7/r", "https", "10.0.0.7", 443, True)) == "10.0.0.7"
    ipv6 = RepoUrl("https://[2001:db8::1]:8443/r", "https", "2001:db8::1", 8443, True)
    assert credential_host(ipv6) == "[2001:db8::1]:8443"
    # A token set for a host goes out over https only: plain http needs one for `host:80`.
    assert credential_host(RepoUrl("http://git.example/r", "http", "git.example", 80)) == "git.example:80"


@pytest.mark.parametrize(
    ("host", "body", "field"),
    [
        ("gït.example", {"token": TOKEN}, "host"),
        ("bad host", {"token": TOKEN}, "host"),
        ("-lead.example", {"token": TOKEN}, "host"),
        ("a..b", {"token": TOKEN}, "host"),
        ("host:0", {"token": TOKEN}, "host"),
        ("host:99999", {"token": TOKEN}, "host"),
        ("host:", {"token": TOKEN}, "host"),
        ("host:1:2", {"token": TOKEN}, "host"),
        ("[::1", {"token": TOKEN}, "host"),
        ("[fe80::1%eth0]", {"token": TOKEN}, "host"),
        ("1.2.3", {"token": TOKEN}, "host"),
        ("h" * 186, {"token": TOKEN}, "host"),
        ("github.com", {"username": "a:b", "token": TOKEN}, "username"),
        ("github.com", {"username": "", "token": TOKEN}, "username"),
        ("github.com", {"username": "tab\there", "token": TOKEN}, "username"),
        ("github.com", {"username": "ünï", "token": TOKEN}, "username"),
        ("github.com", {"username": "u" * 256, "token": TOKEN}, "username"),
        ("github.com", {"username": None, "token": TOKEN}, "username"),
        ("github.com", {}, "token"),
        ("github.com", {"token": ""}, "token"),
        ("github.com", {"token": "ghp_with space"}, "token"),
        ("github.com", {"token": "ghp_line\r\nX-Injected: 1"}, "token"),
        ("github.com", {"token": "ghp_ünïcode"}, "token"),
        ("github.com", {"token": "k" * 4097}, "token"),
        ("github.com", {"token": 12345}, "token"),
        ("github.com", {"token": TOKEN, "other": 1}, "other"),
    ],
)
async def test_bad_input_is_refused_naming_the_field_without_echoing_the_token(
    quiet: Server, host: str, body: dict[str, Any], field: str
) -> None:
    headers = await quiet.new_tenant()
    problem = assert_invalid(await quiet.client.put(url(host), json=body, headers=headers), field)
    for value in body.values():
        if isinstance(value, str) and len(value) > 3:
            assert value not in str(problem)
    assert await listed(quiet, headers) == []


async def test_a_bad_host_is_refused_on_delete_and_keys_are_required(quiet: Server) -> None:
    headers = await quiet.new_tenant()
    assert_invalid(await quiet.client.delete(url("gït.example"), headers=headers), "host")
    assert_problem(await quiet.client.get("/v1/git-credentials"), 401)
    assert_problem(await quiet.client.put(url("github.com"), json={"token": TOKEN}), 401)


async def test_a_tampered_sealed_row_fails_the_lookup_not_with_garbage(quiet: Server) -> None:
    headers = await quiet.new_tenant()
    await put(quiet, headers, "github.com", token=TOKEN)
    async with quiet.container.store.write() as conn:
        row = (await conn.execute(select(secrets))).mappings().one()
        flipped = bytes([*row["sealed"][:-1], row["sealed"][-1] ^ 1])
        await conn.execute(update(secrets).values(sealed=flipped))
    with pytest.raises(SecretUnreadable, match="does not decrypt"):
        await quiet.container.git_credentials.credential_for(await _tenant_id(quiet, headers), "github.com")
    assert_problem(await quiet.client.get("/v1/git-credentials", headers=headers), 503)


async def _tenant_id(server: Server, headers: dict[str, str]) -> str:
    token = headers["Authorization"].removeprefix("Bearer ")
    return (await server.container.keys.authenticate(token)).tenant_id
