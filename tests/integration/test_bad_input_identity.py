"""Bad identity is harmless: forged, expired or revoked keys, foreign ids, replayed idempotency keys."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from outpost.db.tables import api_keys
from outpost.db.types import utc_now
from outpost.domain.ids import new_ulid
from outpost.schemas.keys import KeyCreate
from outpost.services import keys as key_service
from tests.conftest import MakeServer, Server
from tests.integration.api_checks import StoredTenant, assert_problem, list_all, new_stored_tenant

VALID = {"agent": "shell", "task": "echo hi"}
MakeTenant = Callable[[], Awaitable[StoredTenant]]


@pytest.fixture
async def quiet_server(make_server: MakeServer) -> Server:
    """Worker off, so stored dispatches stay as submitted; no rate limit."""
    return await make_server(worker={"enabled": False}, limits={"requests_per_s": 0})


@pytest.fixture
def make_tenant(quiet_server: Server) -> MakeTenant:
    return lambda: new_stored_tenant(quiet_server)


def assert_unauthorized(response: httpx.Response) -> str:
    """A 401 problem that asks for a bearer token; returns its detail."""
    body = assert_problem(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")
    detail: str = body["detail"]
    return detail


def forged_authorizations(token: str) -> dict[str, str | None]:
    _, prefix, secret = token.split("_", 2)
    other = secrets.token_urlsafe(32)
    return {
        "missing": None,
        "empty-bearer": "Bearer ",
        "bearer-only": "Bearer",
        "random": f"Bearer {secrets.token_urlsafe(40)}",
        "right-prefix-wrong-secret": f"Bearer op_{prefix}_{other}",
        "right-prefix-truncated-secret": f"Bearer op_{prefix}_{secret[:-1]}",
        "right-prefix-secret-digest": f"Bearer op_{prefix}_{hashlib.sha256(secret.encode()).hexdigest()}",
        "unknown-prefix-right-secret": f"Bearer op_{'z' * len(prefix)}_{secret}",
        "wrong-scheme-name": f"Bearer xx_{prefix}_{secret}",
        "basic": "Basic " + base64.b64encode(f"{token}:".encode()).decode(),
        "no-auth-scheme": token,
    }


async def test_forged_keys_are_401_with_one_and_the_same_detail(
    make_tenant: MakeTenant, subtests: pytest.Subtests
) -> None:
    tenant = await make_tenant()
    details: set[str] = set()
    async with tenant.unharmed():
        for case, authorization in forged_authorizations(tenant.token).items():
            with subtests.test(case):
                headers = {} if authorization is None else {"Authorization": authorization}
                response = await tenant.client.post("/v1/dispatches", json=VALID, headers=headers)
                details.add(assert_unauthorized(response))
    assert len(details) == 1, details


async def forged_detail(client: httpx.AsyncClient) -> str:
    response = await client.get("/v1/dispatches", headers={"Authorization": "Bearer forged"})
    return assert_unauthorized(response)


async def test_an_expired_key_is_401_like_a_forged_one(make_server: MakeServer) -> None:
    server = await make_server(worker={"enabled": False}, key_cache_ttl_s=0)
    tenant = await new_stored_tenant(server)
    keys = server.container.keys
    issued = await keys.create_key(await keys.authenticate(tenant.token), KeyCreate(expires_in_s=3600))
    headers = {"Authorization": f"Bearer {issued.token}"}
    assert (await server.client.get("/v1/dispatches", headers=headers)).status_code == 200
    async with server.container.store.write() as conn:
        past = utc_now() - timedelta(seconds=1)
        await conn.execute(update(api_keys).where(api_keys.c.id == issued.row.id).values(expires_at=past))
    async with tenant.unharmed():
        response = await server.client.post("/v1/dispatches", json=VALID, headers=headers)
        assert assert_unauthorized(response) == await forged_detail(server.client)


async def test_a_key_that_expires_while_cached_is_refused_at_once(
    quiet_server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = await new_stored_tenant(quiet_server)
    keys = quiet_server.container.keys
    issued = await keys.create_key(await keys.authenticate(tenant.token), KeyCreate(expires_in_s=60))
    headers = {"Authorization": f"Bearer {issued.token}"}
    assert (await quiet_server.client.get("/v1/dispatches", headers=headers)).status_code == 200
    later = utc_now() + timedelta(seconds=61)
    monkeypatch.setattr(key_service, "utc_now", lambda: later)
    async with tenant.unharmed():
        response = await quiet_server.client.post("/v1/dispatches", json=VALID, headers=headers)
        assert assert_unauthorized(response) == await forged_detail(quiet_server.client)


async def test_a_revoked_key_is_401_right_after_revocation(make_tenant: MakeTenant) -> None:
    tenant = await make_tenant()
    created = await tenant.client.post("/v1/keys", json={"name": "second"}, headers=tenant.headers)
    assert created.status_code == 201, created.text
    second = {"Authorization": f"Bearer {created.json()['key']}"}
    assert (await tenant.client.get("/v1/dispatches", headers=second)).status_code == 200
    revoked = await tenant.client.delete(f"/v1/keys/{created.json()['id']}", headers=tenant.headers)
    assert revoked.status_code == 200, revoked.text
    async with tenant.unharmed():
        response = await tenant.client.post("/v1/dispatches", json=VALID, headers=second)
        assert assert_unauthorized(response) == await forged_detail(tenant.client)


def anonymized(response: httpx.Response, requested_id: str) -> tuple[int, str, dict[str, Any]]:
    """The response with the id the caller sent taken out of its detail."""
    body = assert_problem(response, 404)
    body["detail"] = body["detail"].replace(requested_id, "<id>")
    return response.status_code, response.headers["content-type"], body


async def test_another_tenants_dispatch_is_a_404_identical_to_an_unknown_or_malformed_id(
    make_tenant: MakeTenant, subtests: pytest.Subtests
) -> None:
    owner, intruder = await make_tenant(), await make_tenant()
    theirs = owner.dispatch_id
    ids = {"theirs": theirs, "unknown": new_ulid(), "lowercased": theirs.lower(), "malformed": "not-a-ulid"}
    requests = [
        ("GET", "/v1/dispatches/{}"),
        ("POST", "/v1/dispatches/{}/cancel"),
        ("GET", "/v1/dispatches/{}/logs"),
    ]
    async with owner.unharmed(), intruder.unharmed():
        for method, path in requests:
            with subtests.test(path):
                seen = set()
                for dispatch_id in ids.values():
                    response = await intruder.client.request(
                        method, path.format(dispatch_id), headers=intruder.headers
                    )
                    seen.add(repr(anonymized(response, dispatch_id)))
                assert len(seen) == 1, seen


async def post_once(tenant: StoredTenant, key: str, body: dict[str, Any] | None = None) -> httpx.Response:
    response = await tenant.post_json(body or VALID, {"Idempotency-Key": key})
    assert response.status_code == 202, response.text
    return response


async def test_a_replayed_idempotency_key_with_the_same_body_returns_the_first_dispatch(
    make_tenant: MakeTenant,
) -> None:
    tenant = await make_tenant()
    first = await post_once(tenant, "order-42")
    assert "idempotent-replayed" not in first.headers
    same_reordered = b'{"task": "echo hi", "agent": "shell"}'
    for replayed in (
        await post_once(tenant, "order-42"),
        await tenant.post_raw(same_reordered, **{"Idempotency-Key": "order-42"}),
    ):
        assert replayed.status_code == 202, replayed.text
        assert replayed.headers["idempotent-replayed"] == "true"
        assert replayed.headers["location"] == first.headers["location"]
        assert replayed.json()["id"] == first.json()["id"]
    stored = await list_all(tenant.client, tenant.headers)
    assert [item["id"] for item in stored] == [first.json()["id"], tenant.dispatch_id]


async def test_an_idempotency_key_reused_with_a_different_body_is_a_409(make_tenant: MakeTenant) -> None:
    tenant = await make_tenant()
    first = await post_once(tenant, "order-43")
    before = await list_all(tenant.client, tenant.headers)
    for other in (
        {**VALID, "task": "echo other"},
        {**VALID, "timeout_s": 60},
        {**VALID, "labels": {"a": "b"}},
    ):
        response = await tenant.post_json(other, {"Idempotency-Key": "order-43"})
        assert "Idempotency-Key" in assert_problem(response, 409)["detail"]
    assert await list_all(tenant.client, tenant.headers) == before
    assert before[0]["id"] == first.json()["id"]


async def test_two_tenants_using_one_idempotency_key_get_two_dispatches(make_tenant: MakeTenant) -> None:
    alice, bob = await make_tenant(), await make_tenant()
    from_alice = await post_once(alice, "shared-key")
    from_bob = await post_once(bob, "shared-key", {**VALID, "task": "echo a different body"})
    assert "idempotent-replayed" not in from_bob.headers
    assert from_alice.json()["id"] != from_bob.json()["id"]
    assert from_bob.json()["task"] == "echo a different body"
    for tenant, response in ((alice, from_alice), (bob, from_bob)):
        stored = await list_all(tenant.client, tenant.headers)
        assert [item["id"] for item in stored] == [response.json()["id"], tenant.dispatch_id]


async def test_twenty_concurrent_posts_with_one_new_idempotency_key_create_one_dispatch(
    make_tenant: MakeTenant,
) -> None:
    tenant = await make_tenant()
    responses = await asyncio.gather(
        *(tenant.post_json(VALID, {"Idempotency-Key": "burst"}) for _ in range(20))
    )
    assert {r.status_code for r in responses} == {202}, [r.text for r in responses if r.status_code != 202]
    ids = {r.json()["id"] for r in responses}
    assert len(ids) == 1
    assert sum("idempotent-replayed" not in r.headers for r in responses) == 1
    stored = await list_all(tenant.client, tenant.headers)
    assert [item["id"] for item in stored] == [*ids, tenant.dispatch_id]
