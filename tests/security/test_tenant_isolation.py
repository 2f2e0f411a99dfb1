"""The isolation matrix: every API route, called with tenant B's key on tenant A's resources, finds nothing
of A's (404 for reads, 404 or 403 for writes), and leaves all of A exactly as it was.

Routes are read from the app's own OpenAPI schema: a route added later without a row in `MATRIX` fails
`test_every_route_is_in_the_matrix`, so none escapes the check.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.conftest import MakeServer, Server
from tests.integration.helpers import TERMINAL, submit, wait_for_status

GIT_HOST = "git.example.com"
PROVIDER = "anthropic"
A_PROVIDER_KEY = "sk-ant-tenant-a-0123456789abcdef"
A_GIT_TOKEN = "ghp_tenantA0123456789abcdef"

# How each route must answer B. `foreign`: B names A's resource, and gets one of the statuses.
# `own`: the path names something in B's own namespace (a provider, a git host): B's call may succeed but
# acts on B's. `list`: B's answer must not mention anything of A's. `admin`: tenant keys are refused.
# `public`: no tenant data (health, metrics for the operator's scraper).
MATRIX: dict[tuple[str, str], tuple[str, tuple[int, ...]]] = {
    ("GET", "/v1/dispatches"): ("list", (200,)),
    ("POST", "/v1/dispatches"): ("own", (202,)),
    ("GET", "/v1/dispatches/{dispatch_id}"): ("foreign", (404,)),
    ("POST", "/v1/dispatches/{dispatch_id}/cancel"): ("foreign", (404,)),
    ("GET", "/v1/dispatches/{dispatch_id}/logs"): ("foreign", (404,)),
    ("GET", "/v1/dispatches/{dispatch_id}/events"): ("foreign", (404,)),
    ("GET", "/v1/dispatches/{dispatch_id}/artifacts"): ("foreign", (404,)),
    ("GET", "/v1/events"): ("stream", (200,)),  # see test_event_stream's tenant feed tests
    ("GET", "/v1/artifacts/{artifact_id}/{name}"): ("foreign", (403, 404)),
    ("GET", "/v1/workspaces"): ("list", (200,)),
    ("DELETE", "/v1/workspaces/{workspace_id}"): ("foreign", (404,)),
    ("GET", "/v1/keys"): ("list", (200,)),
    ("POST", "/v1/keys"): ("own", (201,)),
    ("DELETE", "/v1/keys/{key_id}"): ("foreign", (404,)),
    ("POST", "/v1/tenants"): ("admin", (403,)),
    ("GET", "/v1/tenants/{tenant_id}"): ("admin", (403,)),
    ("PATCH", "/v1/tenants/{tenant_id}"): ("admin", (403,)),
    ("GET", "/v1/providers"): ("list", (200,)),
    ("GET", "/v1/providers/{name}"): ("own", (200,)),
    ("PATCH", "/v1/providers/{name}"): ("own", (200,)),
    ("DELETE", "/v1/providers/{name}"): ("own", (204, 404)),
    ("GET", "/v1/providers/{name}/key-versions"): ("own", (200,)),
    ("DELETE", "/v1/providers/{name}/key-versions/{version}"): ("foreign", (404,)),
    ("GET", "/v1/git-credentials"): ("list", (200,)),
    ("PUT", "/v1/git-credentials/{host}"): ("own", (200,)),
    ("DELETE", "/v1/git-credentials/{host}"): ("own", (204, 404)),
    ("GET", "/v1/git-credentials/{host}/versions"): ("own", (200, 404)),
    ("DELETE", "/v1/git-credentials/{host}/versions/{version}"): ("foreign", (404,)),
    ("GET", "/v1/audit"): ("list", (200,)),
    ("GET", "/v1/usage"): ("list", (200,)),
    ("GET", "/health/live"): ("public", (200,)),
    ("GET", "/health/ready"): ("public", (200, 503)),
    ("GET", "/health/fleet"): ("public", (200, 503)),
    ("GET", "/metrics"): ("public", (200,)),
}
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/v1/dispatches"): {"agent": "shell", "task": "true", "workspace": {"mode": "persistent",
                                                                              "name": "a-notes"}},
    ("POST", "/v1/keys"): {"name": "b-key"},
    ("POST", "/v1/tenants"): {"name": "b-made-this"},
    ("PATCH", "/v1/tenants/{tenant_id}"): {"limits": {"memory_mb": 64}},
    ("PATCH", "/v1/providers/{name}"): {"api_key": "sk-ant-tenant-b-0123456789abcdef"},
    ("PUT", "/v1/git-credentials/{host}"): {"token": "ghp_tenantB0123456789abcdef"},
}  # fmt: skip


@dataclass
class TenantA:
    """Tenant A's resources, and the ids B uses against them."""

    headers: dict[str, str]
    params: dict[str, str]
    ids: set[str]


@pytest.fixture
async def iso_server(make_server: MakeServer) -> Server:
    return await make_server(limits={"requests_per_s": 0})


async def _make_tenant_a(server: Server) -> TenantA:
    headers = await server.new_tenant()
    done = await submit(server.client, headers, "echo a-private > notes.txt; echo a-final",
                        workspace={"mode": "persistent", "name": "a-notes"})  # fmt: skip
    await wait_for_status(server.client, headers, done["id"], {"succeeded"}, timeout_s=60)
    artifacts = (await server.client.get(f"/v1/dispatches/{done['id']}/artifacts", headers=headers)).json()
    artifact = artifacts["items"][0]
    artifact_id = httpx.URL(artifact["download_url"]).path.split("/")[3]  # /v1/artifacts/{id}/{name}
    (workspace,) = (await server.client.get("/v1/workspaces", headers=headers)).json()["items"]
    key = (await server.client.post("/v1/keys", json={"name": "a-second"}, headers=headers)).json()
    provider = await server.client.patch(f"/v1/providers/{PROVIDER}", json={"api_key": A_PROVIDER_KEY},
                                         headers=headers)  # fmt: skip
    credential = await server.client.put(f"/v1/git-credentials/{GIT_HOST}", json={"token": A_GIT_TOKEN},
                                         headers=headers)  # fmt: skip
    assert (provider.status_code, credential.status_code) == (200, 200), (provider.text, credential.text)
    tenant_id = key["tenant_id"]
    params = {
        "dispatch_id": done["id"], "artifact_id": artifact_id, "name": artifact["name"],
        "workspace_id": workspace["id"], "key_id": key["id"], "tenant_id": tenant_id,
        "version": "1", "host": GIT_HOST,
    }  # fmt: skip
    ids = {done["id"], artifact_id, workspace["id"], key["id"], tenant_id, A_PROVIDER_KEY, A_GIT_TOKEN}
    return TenantA(headers, params, ids)


async def _snapshot(server: Server, a: TenantA) -> dict[str, Any]:
    """Everything of A's that the API shows A (signed links left out: they are new on every read)."""
    reads = [
        f"/v1/dispatches/{a.params['dispatch_id']}", "/v1/dispatches", "/v1/workspaces", "/v1/keys",
        "/v1/providers", f"/v1/providers/{PROVIDER}/key-versions", "/v1/git-credentials",
        f"/v1/git-credentials/{GIT_HOST}/versions", "/v1/usage",
        f"/v1/dispatches/{a.params['dispatch_id']}/logs",
    ]  # fmt: skip
    shown = {path: (await server.client.get(path, headers=a.headers)).json() for path in reads}
    text = json.dumps(shown, sort_keys=True)
    for volatile in ("download_url", "url_expires_at"):
        text = _drop_field(text, volatile)
    tenant = await server.container.keys.get_tenant(a.params["tenant_id"])
    return {"api": text, "tenant": tenant}


def _drop_field(text: str, field: str) -> str:
    data = json.loads(text)

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: strip(item) for key, item in value.items() if key != field}
        if isinstance(value, list):
            return [strip(item) for item in value]
        return value

    return json.dumps(strip(data), sort_keys=True)


def _api_routes(server: Server) -> set[tuple[str, str]]:
    paths = server.app.openapi()["paths"]
    return {(method.upper(), path) for path, operations in paths.items() for method in operations}


async def test_every_route_is_in_the_matrix(iso_server: Server) -> None:
    missing = _api_routes(iso_server) - set(MATRIX)
    assert not missing, f"classify these routes in MATRIX: {sorted(missing)}"
    assert not set(MATRIX) - _api_routes(iso_server), "MATRIX names routes the API no longer has"


async def test_tenant_b_finds_nothing_of_tenant_a_and_changes_nothing(iso_server: Server) -> None:
    a = await _make_tenant_a(iso_server)
    b = await iso_server.new_tenant()
    before = await _snapshot(iso_server, a)
    for (method, template), (kind, statuses) in sorted(MATRIX.items()):
        if kind == "stream":
            continue
        named = {"name": PROVIDER} if template.startswith("/v1/providers/") else {}
        path = template.format(**{**a.params, **named})
        body = BODIES.get((method, template))
        response = await _call(iso_server.client, method, path, b, body)
        what = f"{method} {template} ({kind})"
        assert response.status_code in statuses, (what, response.status_code, response.text)
        if kind != "public":  # an error may echo the id B sent, nothing else of A's
            leaked = {value for value in a.ids if value in response.text and value not in path}
            assert not leaked, (what, leaked)
        if response.status_code >= 400:
            assert response.headers["content-type"] == "application/problem+json", what
        if (method, template) == ("POST", "/v1/dispatches"):
            b_dispatch = response.json()["id"]
    assert await _snapshot(iso_server, a) == before
    # B's own dispatch ends before the server stops (a run cut off by the shutdown is another test's case).
    await wait_for_status(iso_server.client, b, b_dispatch, TERMINAL, timeout_s=60)


async def _call(
    client: httpx.AsyncClient, method: str, path: str, headers: dict[str, str], body: dict[str, Any] | None
) -> httpx.Response:
    if method == "GET" and path.endswith("/events"):
        return await client.get(path, headers=headers)  # a 404 is answered before any stream starts
    return await client.request(method, path, headers=headers, json=body)
