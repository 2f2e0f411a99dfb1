"""API keys and tenants over the API: issue, list, revoke, tenancy, storage as digests, rate limits."""

from __future__ import annotations

import asyncio
import hashlib
import re
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from outpost.db.tables import api_keys
from outpost.domain.ids import new_ulid
from tests.conftest import MakeServer, Server
from tests.integration.api_checks import assert_problem, list_all

KEY_FIELDS = {"id", "tenant_id", "prefix", "name", "admin", "created_at", "expires_at", "revoked_at"}
KEY_FORMAT = re.compile(r"^op_(?P<prefix>[a-z0-9]{12})_(?P<secret>[A-Za-z0-9_-]{43,})$")


@pytest.fixture
async def quiet_server(make_server: MakeServer) -> Server:
    return await make_server(worker={"enabled": False}, limits={"requests_per_s": 0})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def create_key(server: Server, headers: dict[str, str], **fields: Any) -> dict[str, Any]:
    response = await server.client.post("/v1/keys", json=fields, headers=headers)
    assert response.status_code == 201, response.text
    issued: dict[str, Any] = response.json()
    return issued


async def works(server: Server, headers: dict[str, str]) -> bool:
    response = await server.client.get("/v1/keys", headers=headers)
    assert response.status_code in (200, 401), response.text
    return response.status_code == 200


async def test_a_new_key_shows_its_secret_once_and_the_list_never_does(quiet_server: Server) -> None:
    headers = await quiet_server.new_tenant()
    issued = await create_key(quiet_server, headers, name="ci")
    assert set(issued) == KEY_FIELDS | {"key"}
    match = KEY_FORMAT.match(issued["key"])
    assert match is not None, issued["key"]
    assert issued["prefix"] == f"op_{match['prefix']}"
    assert (issued["name"], issued["admin"], issued["revoked_at"]) == ("ci", False, None)
    assert await works(quiet_server, bearer(issued["key"]))
    listed = await quiet_server.client.get("/v1/keys", headers=headers)
    assert [item["name"] for item in listed.json()] == ["initial", "ci"]
    assert all(set(item) == KEY_FIELDS for item in listed.json())
    digest = hashlib.sha256(match["secret"].encode()).hexdigest()
    assert match["secret"] not in listed.text
    assert digest not in listed.text


async def test_revoking_a_key_is_idempotent_and_stops_it(quiet_server: Server) -> None:
    headers = await quiet_server.new_tenant()
    issued = await create_key(quiet_server, headers, name="temp")
    first = await quiet_server.client.delete(f"/v1/keys/{issued['id']}", headers=headers)
    again = await quiet_server.client.delete(f"/v1/keys/{issued['id']}", headers=headers)
    assert (first.status_code, again.status_code) == (200, 200)
    assert first.json()["revoked_at"] is not None
    assert again.json() == first.json()
    assert not await works(quiet_server, bearer(issued["key"]))
    assert await works(quiet_server, headers)
    listed = {
        item["id"]: item for item in (await quiet_server.client.get("/v1/keys", headers=headers)).json()
    }
    assert listed[issued["id"]]["revoked_at"] == first.json()["revoked_at"]


async def test_a_tenant_key_cannot_create_admin_keys_or_tenants(quiet_server: Server) -> None:
    headers = await quiet_server.new_tenant()
    other = await quiet_server.new_tenant()
    other_tenant_id = (await quiet_server.client.get("/v1/keys", headers=other)).json()[0]["tenant_id"]
    before = (await quiet_server.client.get("/v1/keys", headers=headers)).json()
    attempts = [
        ("/v1/keys", {"name": "root", "admin": True}),
        ("/v1/keys", {"name": "theirs", "tenant_id": other_tenant_id}),
        ("/v1/tenants", {"name": "sneaky"}),
        ("/v1/tenants", {"name": "sneaky-admin", "admin": True}),
    ]
    for path, body in attempts:
        assert_problem(await quiet_server.client.post(path, json=body, headers=headers), 403)
    assert (await quiet_server.client.get("/v1/keys", headers=headers)).json() == before
    assert len((await quiet_server.client.get("/v1/keys", headers=other)).json()) == 1


async def test_an_admin_key_creates_a_tenant_whose_key_works(quiet_server: Server) -> None:
    admin = await quiet_server.new_tenant(admin=True)
    response = await quiet_server.client.post("/v1/tenants", json={"name": "acme"}, headers=admin)
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["name"] == "acme"
    assert created["key"]["tenant_id"] == created["id"]
    assert created["key"]["admin"] is False
    acme = bearer(created["key"]["key"])
    assert await list_all(quiet_server.client, acme) == []
    submitted = await quiet_server.client.post(
        "/v1/dispatches", json={"agent": "shell", "task": "true"}, headers=acme
    )
    assert submitted.status_code == 202, submitted.text
    assert [item["id"] for item in await list_all(quiet_server.client, acme)] == [submitted.json()["id"]]
    assert await list_all(quiet_server.client, admin) == []
    assert_problem(await quiet_server.client.post("/v1/tenants", json={"name": "acme-2"}, headers=acme), 403)


async def test_an_admin_key_creates_a_key_for_another_tenant(quiet_server: Server) -> None:
    admin = await quiet_server.new_tenant(admin=True)
    tenant = await quiet_server.new_tenant()
    tenant_id = (await quiet_server.client.get("/v1/keys", headers=tenant)).json()[0]["tenant_id"]
    issued = await create_key(quiet_server, admin, name="for-them", tenant_id=tenant_id)
    assert issued["tenant_id"] == tenant_id
    assert [item["name"] for item in (await quiet_server.client.get("/v1/keys", headers=tenant)).json()] == [
        "initial",
        "for-them",
    ]
    unknown = await quiet_server.client.post("/v1/keys", json={"tenant_id": new_ulid()}, headers=admin)
    assert_problem(unknown, 404)


async def test_a_duplicate_tenant_name_is_a_409(quiet_server: Server) -> None:
    admin = await quiet_server.new_tenant(admin=True)
    first = await quiet_server.client.post("/v1/tenants", json={"name": "twice"}, headers=admin)
    assert first.status_code == 201, first.text
    second = await quiet_server.client.post(
        "/v1/tenants", json={"name": "twice", "admin": True}, headers=admin
    )
    assert_problem(second, 409)
    assert await works(quiet_server, bearer(first.json()["key"]["key"]))


async def test_a_tenant_cannot_revoke_another_tenants_key(quiet_server: Server) -> None:
    alice, bob = await quiet_server.new_tenant(), await quiet_server.new_tenant()
    bobs_key = (await quiet_server.client.get("/v1/keys", headers=bob)).json()[0]
    foreign = await quiet_server.client.delete(f"/v1/keys/{bobs_key['id']}", headers=alice)
    unknown_id = new_ulid()
    unknown = await quiet_server.client.delete(f"/v1/keys/{unknown_id}", headers=alice)
    foreign_detail = assert_problem(foreign, 404)["detail"].replace(bobs_key["id"], "<id>")
    assert foreign_detail == assert_problem(unknown, 404)["detail"].replace(unknown_id, "<id>")
    assert await works(quiet_server, bob)
    assert (await quiet_server.client.get("/v1/keys", headers=bob)).json() == [bobs_key]


async def test_keys_are_high_entropy_and_stored_only_as_sha256_digests(quiet_server: Server) -> None:
    headers = await quiet_server.new_tenant()
    tokens = [headers["Authorization"].removeprefix("Bearer ")]
    tokens += [(await create_key(quiet_server, headers, name=f"k{i}"))["key"] for i in range(20)]
    matches = [KEY_FORMAT.match(token) for token in tokens]
    assert all(matches), tokens
    prefixes = {m["prefix"] for m in matches if m}
    secrets = {m["secret"] for m in matches if m}
    assert len(prefixes) == len(secrets) == len(tokens)
    # 21 secrets of 43+ characters from a 64-symbol alphabet: a weak generator would repeat itself.
    assert len(set("".join(secrets))) > 55
    async with quiet_server.container.store.read() as conn:
        rows = (await conn.execute(select(api_keys))).mappings().all()
    stored = repr([dict(row) for row in rows])
    digests = {row["secret_sha256"] for row in rows}
    for secret in secrets:
        assert secret not in stored
        assert hashlib.sha256(secret.encode()).hexdigest() in digests
    assert all(re.fullmatch(r"[0-9a-f]{64}", digest) for digest in digests)


async def test_a_burst_over_the_rate_limit_is_a_429_with_retry_after(make_server: MakeServer) -> None:
    server = await make_server(worker={"enabled": False}, limits={"requests_per_s": 5})
    headers = await server.new_tenant()
    spare = bearer((await create_key(server, headers, name="spare"))["key"])
    responses: list[httpx.Response] = []
    for index in range(30):
        body = {"agent": "shell", "task": f"echo {index}"}
        responses.append(await server.client.post("/v1/dispatches", json=body, headers=headers))
    statuses = [response.status_code for response in responses]
    assert set(statuses) == {202, 429}, statuses
    assert statuses.index(429) >= 8, "the burst allowance is twice the rate"
    limited = next(response for response in responses if response.status_code == 429)
    assert_problem(limited, 429)
    assert int(limited.headers["retry-after"]) >= 1
    stored = await list_all(server.client, spare)
    assert len(stored) == statuses.count(202)
    await asyncio.sleep(0.5)
    assert (await server.client.get("/v1/keys", headers=headers)).status_code == 200
