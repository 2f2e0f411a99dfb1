"""The audit log through a server: each audited action writes its row in the action's own transaction,
concurrent appends keep one gapless chain, tenants read only their rows, retention keeps it verifiable."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from outpost.audit.chain import AuditEntry, Origin
from outpost.audit.verify import AuditKeyMismatch, ChainBroken
from outpost.db.repositories import audit as audit_repo
from outpost.db.tables import audit_head, audit_log
from outpost.db.types import utc_now
from outpost.secrets.master_key import encode_master_key
from tests.conftest import MakeServer, Server
from tests.integration.api_checks import assert_problem
from tests.integration.audit_checks import actions, audit_rows, tamper, tenant_id_of
from tests.integration.helpers import submit, wait_for_status

PROVIDERS = {"openai": {"base_url": "http://127.0.0.1:9/openai", "api_key": "sk-server-0000"}}
TENANT_KEYS = ("sk-tenant-first-1111", "sk-tenant-second-2222")
GIT_TOKEN = "ghp_token_3333"


@pytest.fixture
async def quiet(make_server: MakeServer) -> Server:
    return await make_server(worker={"enabled": False}, limits={"requests_per_s": 0}, providers=PROVIDERS)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def new_key(server: Server, headers: dict[str, str], **fields: Any) -> dict[str, Any]:
    response = await server.client.post("/v1/keys", json=fields, headers=headers)
    assert response.status_code == 201, response.text
    issued: dict[str, Any] = response.json()
    return issued


async def test_every_refused_key_is_recorded_with_why_and_from_where(quiet: Server) -> None:
    admin = await quiet.new_tenant(admin=True)
    tenant = await quiet.new_tenant()
    revoked = await new_key(quiet, tenant)
    assert (await quiet.client.delete(f"/v1/keys/{revoked['id']}", headers=tenant)).status_code == 200
    known_prefix = revoked["prefix"]
    attempts = [
        {},
        {"Authorization": "Bearer not-a-key"},
        bearer("op_abcdefghijkl_unknown"),
        bearer(f"{known_prefix}_wrong-secret"),
        bearer(revoked["key"]),
    ]
    for headers in attempts:
        assert_problem(await quiet.client.get("/v1/dispatches", headers=headers), 401)
    failures = [row for row in await audit_rows(quiet, admin) if row["action"] == "auth.failed"]
    reasons = [row["detail"]["reason"] for row in failures]
    assert reasons == ["missing", "malformed", "unknown", "wrong_secret", "revoked"]
    assert [row["actor"] for row in failures] == [
        None, None, "prefix:op_abcdefghijkl", f"prefix:{known_prefix}", f"prefix:{known_prefix}",
    ]  # fmt: skip
    assert {row["tenant_id"] for row in failures} == {None}
    assert {row["source_ip"] for row in failures} == {"127.0.0.1"}
    assert "wrong-secret" not in json.dumps(failures)
    assert not [row for row in await audit_rows(quiet, tenant) if row["action"] == "auth.failed"]


async def test_tenant_key_and_policy_changes_are_recorded_by_whoever_made_them(quiet: Server) -> None:
    admin = await quiet.new_tenant(admin=True)
    admin_key = (await quiet.client.get("/v1/keys", headers=admin)).json()[0]
    made = await quiet.client.post("/v1/tenants", json={"name": "acme"}, headers=admin)
    assert made.status_code == 201, made.text
    acme_id, acme = made.json()["id"], bearer(made.json()["key"]["key"])
    ci = await new_key(quiet, acme, name="ci")
    for _ in range(2):  # revoking twice is one revocation
        assert (await quiet.client.delete(f"/v1/keys/{ci['id']}", headers=acme)).status_code == 200
    patched = await quiet.client.patch(
        f"/v1/tenants/{acme_id}", json={"limits": {"pids": 64}, "monthly_budget_usd": 12.5}, headers=admin
    )
    assert patched.status_code == 200, patched.text

    rows = await audit_rows(quiet, admin, tenant=acme_id)
    assert actions(rows) == ["tenant.create", "key.create", "key.revoke", "tenant.policy"]
    created, key_made, key_revoked, policy = rows
    assert (created["actor"], created["detail"]["name"]) == (f"key:{admin_key['id']}", "acme")
    assert key_made["actor"] == key_revoked["actor"] == f"key:{made.json()['key']['id']}"
    assert (key_made["target"], key_made["detail"]["prefix"], key_made["detail"]["name"]) == (
        ci["id"], ci["prefix"], "ci",
    )  # fmt: skip
    assert policy["detail"]["before"]["limits"] is None
    assert policy["detail"]["after"]["limits"] == {"pids": 64}
    assert policy["detail"]["before"]["monthly_budget_micro_usd"] is None
    assert policy["detail"]["after"]["monthly_budget_micro_usd"] == 12_500_000
    assert ci["key"] not in json.dumps(rows)


async def test_dispatches_and_workspaces_are_recorded_as_created_cancelled_and_deleted(
    server: Server,
) -> None:
    headers = await server.new_tenant()
    tenant_id = await tenant_id_of(server, headers)
    created = await submit(
        server.client, headers, "sleep 30", workspace={"mode": "persistent", "name": "scratch"}
    )
    await wait_for_status(server.client, headers, created["id"], {"running"})
    cancelled = await server.client.post(f"/v1/dispatches/{created['id']}/cancel", headers=headers)
    assert cancelled.json()["status"] == "cancelled", cancelled.text
    again = await server.client.post(f"/v1/dispatches/{created['id']}/cancel", headers=headers)
    assert again.status_code == 200, again.text  # a cancel of an ended dispatch changes nothing
    listed = (await server.client.get("/v1/workspaces", headers=headers)).json()["items"]
    deleted = await server.client.delete(f"/v1/workspaces/{listed[0]['id']}", headers=headers)
    assert deleted.status_code == 204, deleted.text

    rows = [row for row in await audit_rows(server, headers) if row["action"] != "tenant.create"]
    expected = ["workspace.create", "dispatch.create", "dispatch.cancel", "workspace.delete"]
    assert actions(rows) == expected
    assert {row["tenant_id"] for row in rows} == {tenant_id}
    workspace_id, dispatch_id = listed[0]["id"], created["id"]
    assert [row["target"] for row in rows] == [workspace_id, dispatch_id, dispatch_id, workspace_id]
    assert (rows[0]["detail"]["name"], rows[0]["detail"]["dispatch"]) == ("scratch", dispatch_id)
    assert (rows[1]["detail"]["agent"], rows[1]["detail"]["workspace"]) == ("shell", "scratch")
    assert rows[2]["detail"] == {"status": "cancelled"}


async def test_secret_writes_rotations_reads_and_retirements_are_recorded_without_values(
    quiet: Server,
) -> None:
    headers = await quiet.new_tenant()
    tenant_id = await tenant_id_of(quiet, headers)
    for value, retire in zip(TENANT_KEYS, (True, False), strict=True):
        body = {"api_key": value, "retire_previous": retire}
        response = await quiet.client.patch("/v1/providers/openai", json=body, headers=headers)
        assert response.status_code == 200, response.text
    retired = await quiet.client.delete("/v1/providers/openai/key-versions/1", headers=headers)
    assert retired.status_code == 204, retired.text
    assert await quiet.container.providers.upstream_for(tenant_id, "openai", run_id="RUN.0") is not None
    git_url, credential = "/v1/git-credentials/github.com", {"username": "bot", "token": GIT_TOKEN}
    assert (await quiet.client.put(git_url, json=credential, headers=headers)).is_success
    assert await quiet.container.git_credentials.credential_for(tenant_id, "github.com", run_id="RUN.1")
    assert (await quiet.client.delete(git_url, headers=headers)).is_success
    assert await quiet.container.git_credentials.credential_for(tenant_id, "github.com") is None

    rows = [row for row in await audit_rows(quiet, headers) if row["action"].startswith("secret.")]
    seen = [(row["action"], row["target"], row["detail"].get("version")) for row in rows]
    provider, git = "provider/openai/api_key", "git/github.com/credential"
    assert seen == [
        ("secret.write", provider, 1), ("secret.rotate", provider, 2), ("secret.retire", provider, 1),
        ("secret.read", provider, 2), ("secret.write", git, 1), ("secret.read", git, 1),
        ("secret.retire", git, None),
    ]  # fmt: skip
    reads = [row for row in rows if row["action"] == "secret.read"]
    assert {row["actor"] for row in reads} == {"worker"}
    assert [row["detail"]["run"] for row in reads] == ["RUN.0", "RUN.1"]
    text = json.dumps(rows)
    assert not any(secret in text for secret in (*TENANT_KEYS, GIT_TOKEN))


async def test_an_action_rolled_back_leaves_no_row_and_the_head_where_it_was(quiet: Server) -> None:
    audit = quiet.container.audit
    await quiet.new_tenant()
    before = await audit.verify()

    async def append_then_fail() -> None:
        async with quiet.container.store.write() as conn:
            await audit.log.append(conn, AuditEntry("test.action", None, Origin("test")))
            raise LookupError("the action fails after its row was appended")

    with pytest.raises(LookupError):
        await append_then_fail()
    after = await audit.verify()
    assert (after.rows, after.head_hash) == (before.rows, before.head_hash)
    headers = await quiet.new_tenant()
    refused = await quiet.client.delete("/v1/keys/01JNOSUCHKEY00000000000000", headers=headers)
    assert_problem(refused, 404)
    assert (await audit.verify()).rows == before.rows + 1  # the new tenant; nothing for the refused revoke


async def test_concurrent_appends_from_two_servers_keep_one_gapless_chain(make_server: MakeServer) -> None:
    servers = [await make_server(worker={"enabled": False}) for _ in range(2)]
    per_server = 40

    async def append(server: Server, number: int) -> None:
        entry = AuditEntry("test.append", None, Origin(f"server-{number % 2}"), detail={"n": number})
        await server.container.audit.log.record(server.container.store, [entry])

    await asyncio.gather(*(append(servers[n % 2], n) for n in range(2 * per_server)))
    report = await servers[0].container.audit.verify()
    assert (report.rows, report.first_seq, report.last_seq) == (2 * per_server, 1, 2 * per_server)
    async with servers[1].container.store.read() as conn:
        numbers = (await conn.execute(select(audit_log.c.detail))).scalars().all()
    assert sorted(detail["n"] for detail in numbers) == list(range(2 * per_server))


async def test_the_audit_endpoint_shows_each_tenant_only_its_own_rows(quiet: Server) -> None:
    admin = await quiet.new_tenant(admin=True)
    first, second = await quiet.new_tenant(), await quiet.new_tenant()
    first_id, second_id = await tenant_id_of(quiet, first), await tenant_id_of(quiet, second)
    for _ in range(3):
        await new_key(quiet, first)
    await new_key(quiet, second)
    await quiet.client.get("/v1/keys", headers=bearer("op_zzzzzzzzzzzz_nope"))

    own = await audit_rows(quiet, first, limit=2)
    assert len(own) == 4
    assert {row["tenant_id"] for row in own} == {first_id}
    assert [row["seq"] for row in own] == sorted(row["seq"] for row in own)
    assert {row["tenant_id"] for row in await audit_rows(quiet, second)} == {second_id}
    assert await audit_rows(quiet, first, tenant=first_id) == own
    assert_problem(await quiet.client.get(f"/v1/audit?tenant={second_id}", headers=first), 403)
    everything = await audit_rows(quiet, admin, limit=3)
    assert {row["tenant_id"] for row in everything} >= {first_id, second_id, None}
    assert [row["seq"] for row in everything] == list(range(1, len(everything) + 1))
    assert await audit_rows(quiet, admin, tenant=second_id) == await audit_rows(quiet, second)
    for query in ("after=-1", "limit=0", "limit=1001", "after=abc", f"tenant={'x' * 65}"):
        assert_problem(await quiet.client.get(f"/v1/audit?{query}", headers=admin), 422)
    assert_problem(await quiet.client.get("/v1/audit"), 401)


async def test_a_row_edited_in_the_database_is_named_by_verify(quiet: Server) -> None:
    headers = await quiet.new_tenant()
    for _ in range(3):
        await new_key(quiet, headers)
    assert (await quiet.container.audit.verify()).rows == 4
    await tamper(quiet, "UPDATE audit_log SET actor = 'key:someone-else' WHERE seq = 3")
    with pytest.raises(ChainBroken, match="at seq 3: it was edited") as caught:
        await quiet.container.audit.verify()
    assert caught.value.seq == 3


async def test_retention_deletes_old_rows_and_what_is_left_still_verifies(quiet: Server) -> None:
    headers = await quiet.new_tenant()
    for _ in range(4):
        await new_key(quiet, headers)
    later = utc_now() + timedelta(days=366)
    assert (await quiet.container.janitor.sweep(later)).audit_rows_deleted == 5
    await new_key(quiet, headers)
    verified = await quiet.container.audit.verify()
    assert (verified.first_seq, verified.rows) == (6, 2)
    async with quiet.container.store.read() as conn:
        pruned = (await conn.execute(select(audit_log).where(audit_log.c.seq == 6))).mappings().one()
    assert (pruned["action"], pruned["actor"]) == ("audit.pruned", "retention")
    assert pruned["detail"]["through_seq"] == 5
    await tamper(quiet, "DELETE FROM audit_log WHERE seq = 6")
    with pytest.raises(ChainBroken, match="seq 1 to 6 are missing and no pruning record"):
        await quiet.container.audit.verify()


async def test_a_server_started_with_another_master_key_refuses_to_extend_the_log(
    make_server: MakeServer,
) -> None:
    first = await make_server(worker={"enabled": False})
    await first.new_tenant()
    other_key = {"master_key": encode_master_key(b"\x05" * 32)}
    with pytest.raises(AuditKeyMismatch, match=r"\(seq 1\) does not verify under this server's master keys"):
        await make_server(worker={"enabled": False}, secrets=other_key)
    async with first.container.store.read() as conn:
        assert (await conn.execute(select(audit_head.c.seq))).scalar_one() == 1
        assert await audit_repo.first_seq(conn) == 1


async def test_rows_come_back_as_the_text_they_were_sealed_over(make_server: MakeServer) -> None:
    """Verification's fast path: each stored row's raw text MACs as it is, without re-encoding."""
    server = await make_server(worker={"enabled": False})
    details = [
        {"agent": "shell", "max_cost_micro_usd": 2_000_000, "workspace": None, "repo": "https://h/r"},
        {"before": {"limits": {"pids": 64, "cpu_cores": 0.5}, "egress_allow": ["a.example", "*.b.example"]}},
        {"admin": True, "expires_at": utc_now(), "nested": [{"zz": 1, "a": [2.5, -3]}]},
    ]
    entries = [AuditEntry("test.shape", None, Origin("test"), detail=detail) for detail in details]
    records = await server.container.audit.log.record(server.container.store, entries)
    key = server.container.audit.log.key
    async with server.container.store.read() as conn:
        raw = [await audit_repo.raw_row(conn, record.seq) for record in records]
    for row in raw:
        assert row is not None
        seq, created, tenant_id, actor, action, target, source_ip, detail, prev_hash, stored = row
        assert key.mac(prev_hash, seq, created, tenant_id, actor, action, target, source_ip, detail) == stored
