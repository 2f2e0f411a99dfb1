"""Rotating the master key with an overlap: old and new keys configured, both kinds of row readable,
`outpost secrets reseal` and `status` as the operator runs them, then the old key dropped."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from outpost.db.repositories import secrets as repo
from outpost.db.tables import secrets
from outpost.secrets.box import SecretBox, SecretUnreadable
from outpost.secrets.keyring import MasterKeyring
from outpost.secrets.master_key import encode_master_key
from outpost.secrets.reseal import key_holdings, reseal_secrets
from outpost.services.keys import Principal
from tests.conftest import MakeServer, Server
from tests.integration.processes import OUTPOST

OLD_KEY, NEW_KEY = os.urandom(32), os.urandom(32)
OLD, NEW = encode_master_key(OLD_KEY), encode_master_key(NEW_KEY)
OLD_ID, NEW_ID = SecretBox(OLD_KEY).key_id, SecretBox(NEW_KEY).key_id
PROVIDERS = {"openai": {"base_url": "http://127.0.0.1:9/openai"}}
PROVIDER_KEY, ROTATED_KEY = "sk-before-rotation-0a1b2c", "sk-after-rotation-3d4e5f"
GIT_TOKEN = "ghp_beforeRotation6a7b8c"


async def start(make_server: MakeServer, current: str, *previous: str) -> Server:
    keys = {"master_key": current, "previous_master_keys": list(previous)}
    return await make_server(worker={"enabled": False}, providers=PROVIDERS, secrets=keys)


async def set_secrets(server: Server, headers: dict[str, str], provider_key: str) -> None:
    response = await server.client.patch(
        "/v1/providers/openai", json={"api_key": provider_key}, headers=headers
    )
    assert response.status_code == 200, response.text
    body = {"token": GIT_TOKEN, "username": "bot"}
    response = await server.client.put("/v1/git-credentials/github.com", json=body, headers=headers)
    assert response.status_code == 200, response.text


async def read_secrets(server: Server, tenant_id: str) -> tuple[str | None, str | None]:
    upstream = await server.container.providers.upstream_for(tenant_id, "openai")
    credential = await server.container.git_credentials.credential_for(tenant_id, "github.com")
    key = upstream.api_key.get_secret_value() if upstream and upstream.api_key else None
    return key, credential.password if credential else None


async def tenant_of(server: Server, headers: dict[str, str]) -> str:
    principal: Principal = await server.container.keys.authenticate(headers["Authorization"][7:])
    return principal.tenant_id


def admin(database_url: str, data_dir: Path, *args: str, **keys: str) -> subprocess.CompletedProcess[str]:
    """`outpost secrets …` (offline) on the test's database, with the given OUTPOST_SECRETS__* keys."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTPOST_")}
    env |= {"OUTPOST_DATABASE_URL": database_url, "OUTPOST_DATA_DIR": str(data_dir)}
    env |= {f"OUTPOST_SECRETS__{name.upper()}": value for name, value in keys.items()}
    return subprocess.run(
        [OUTPOST, "secrets", *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


async def status(database_url: str, data_dir: Path, **keys: str) -> dict[str, tuple[str, int]]:
    done = await asyncio.to_thread(admin, database_url, data_dir, "status", "--json", **keys)
    assert done.returncode == 0, done.stderr
    rows: list[dict[str, Any]] = json.loads(done.stdout)["keys"]
    return {row["key_id"]: (row["role"], row["live_secrets"]) for row in rows}


async def test_a_master_key_rotates_with_an_overlap_then_the_old_key_is_dropped(
    make_server: MakeServer, database_url: str, tmp_path: Path
) -> None:
    before = await start(make_server, OLD)
    first = await before.new_tenant()
    await set_secrets(before, first, PROVIDER_KEY)
    first_id = await tenant_of(before, first)

    overlap = await start(make_server, NEW, OLD)
    assert await read_secrets(overlap, first_id) == (PROVIDER_KEY, GIT_TOKEN)  # rows under the old key
    second = await overlap.new_tenant()
    await set_secrets(overlap, second, ROTATED_KEY)  # new rows: under the new key
    assert await read_secrets(overlap, await tenant_of(overlap, second)) == (ROTATED_KEY, GIT_TOKEN)
    offline = tmp_path / "admin"
    assert await status(database_url, offline, master_key=NEW, previous_master_keys=OLD) == {
        NEW_ID: ("current", 2), OLD_ID: ("previous", 2),
    }  # fmt: skip

    resealed = await asyncio.to_thread(
        admin, database_url, offline, "reseal", master_key=NEW, previous_master_keys=OLD
    )
    assert (resealed.returncode, resealed.stdout) == (
        0,
        f"re-sealed 2 secrets under master key id {NEW_ID}\n",
    )
    table = await asyncio.to_thread(
        admin, database_url, offline, "status", master_key=NEW, previous_master_keys=OLD
    )
    assert "no live secret is sealed under a previous key: they can be dropped" in table.stdout
    assert await status(database_url, offline, master_key=NEW) == {NEW_ID: ("current", 4)}
    assert await read_secrets(overlap, first_id) == (PROVIDER_KEY, GIT_TOKEN)  # still read as before

    after = await start(make_server, NEW)
    assert await read_secrets(after, first_id) == (PROVIDER_KEY, GIT_TOKEN)
    with pytest.raises(SecretUnreadable) as refused:
        await start(make_server, OLD)
    assert f"key id {NEW_ID} (4 live)" in refused.value.detail
    assert f"{OLD_ID} (current)" in refused.value.detail


async def test_a_reseal_stopped_midway_resumes_and_touches_no_row_twice(
    make_server: MakeServer, database_url: str, tmp_path: Path
) -> None:
    before = await start(make_server, OLD)
    tenants = [await before.new_tenant() for _ in range(3)]
    for headers in tenants:
        await set_secrets(before, headers, PROVIDER_KEY)
    keyring = MasterKeyring(SecretBox(NEW_KEY), [SecretBox(OLD_KEY)])
    store = before.container.store

    class Stopped(Exception):
        pass

    def stop_after_first_batch(done: int) -> None:
        raise Stopped

    with pytest.raises(Stopped):
        await reseal_secrets(store, keyring, batch_size=2, on_batch=stop_after_first_batch)
    held = {h.key_id: h.live_secrets for h in await key_holdings(store, keyring)}
    assert held == {NEW_ID: 2, OLD_ID: 4}  # the first batch committed, the rest untouched
    async with store.read() as conn:
        moved = {row["id"]: row["sealed"] for row in (await conn.execute(select(secrets))).mappings()
                 if row["key_id"] == NEW_ID}  # fmt: skip
    resumed = await asyncio.to_thread(
        admin, database_url, tmp_path / "admin", "reseal", "--batch-size", "2",
        master_key=NEW, previous_master_keys=OLD,
    )  # fmt: skip
    assert resumed.stdout == f"re-sealed 4 secrets under master key id {NEW_ID}\n", resumed.stderr
    async with store.read() as conn:
        rows = (await conn.execute(select(secrets))).mappings().all()
    assert {row["key_id"] for row in rows} == {NEW_ID}
    assert all(row["sealed"] == moved[row["id"]] for row in rows if row["id"] in moved)
    # Nothing was written through a server since the rotation: the reseal's audit row, under the new
    # key, is what lets a server given only the new key start.
    after = await start(make_server, NEW)
    for headers in tenants:
        assert await read_secrets(after, await tenant_of(after, headers)) == (PROVIDER_KEY, GIT_TOKEN)


async def test_a_row_retired_while_a_reseal_runs_stays_retired(make_server: MakeServer) -> None:
    before = await start(make_server, OLD)
    headers = await before.new_tenant()
    await set_secrets(before, headers, PROVIDER_KEY)
    store = before.container.store
    async with store.read() as conn:
        read_before = await repo.live_rows_not_under(conn, NEW_ID, "", 10)
    response = await before.client.delete("/v1/git-credentials/github.com", headers=headers)
    assert response.status_code == 204  # retired between the reseal's read and its write
    async with store.write() as conn:
        replaced = [await repo.replace_sealed(conn, row, NEW_ID, b"new") for row in read_before]
    assert sorted(replaced) == [False, True]
    async with store.read() as conn:
        retired = (
            (await conn.execute(select(secrets).where(secrets.c.retired_at.is_not(None)))).mappings().one()
        )
    assert (retired["sealed"], retired["key_id"]) == (b"", OLD_ID)


async def test_a_row_that_does_not_decrypt_is_named_and_left_as_it_is(
    make_server: MakeServer, database_url: str, tmp_path: Path
) -> None:
    before = await start(make_server, OLD)
    headers = await before.new_tenant()
    await set_secrets(before, headers, PROVIDER_KEY)
    async with before.container.store.write() as conn:
        row = (await conn.execute(select(secrets).where(secrets.c.name.like("provider/%")))).mappings().one()
        flipped = bytes([*row["sealed"][:-1], row["sealed"][-1] ^ 1])
        await conn.execute(update(secrets).where(secrets.c.id == row["id"]).values(sealed=flipped))
    done = await asyncio.to_thread(
        admin, database_url, tmp_path / "admin", "reseal", master_key=NEW, previous_master_keys=OLD
    )
    assert done.returncode == 3, done
    assert done.stdout == f"re-sealed 1 secrets under master key id {NEW_ID}\n"
    assert done.stderr.splitlines() == [done.stderr.strip()]
    assert "1 stored secrets do not decrypt" in done.stderr
    assert f"provider/openai/api_key v1 (key id {OLD_ID})" in done.stderr
    async with before.container.store.read() as conn:
        kept = (await conn.execute(select(secrets).where(secrets.c.id == row["id"]))).mappings().one()
    assert (kept["key_id"], kept["sealed"]) == (OLD_ID, flipped)


async def test_offline_commands_need_the_keys_and_never_make_one(
    make_server: MakeServer, database_url: str, tmp_path: Path
) -> None:
    before = await start(make_server, OLD)
    await set_secrets(before, await before.new_tenant(), PROVIDER_KEY)
    offline = tmp_path / "admin"
    missing = await asyncio.to_thread(admin, database_url, offline, "reseal")
    assert missing.returncode == 3
    assert missing.stderr.startswith("outpost: no master key: OUTPOST_SECRETS__MASTER_KEY is unset")
    assert not (offline / "master.key").exists()
    lacking = await asyncio.to_thread(admin, database_url, offline, "reseal", master_key=NEW)
    assert lacking.returncode == 3
    assert f"key id {OLD_ID} (2 live)" in lacking.stderr
    assert lacking.stderr.splitlines() == [lacking.stderr.strip()]
    table = await asyncio.to_thread(admin, database_url, offline, "status", master_key=NEW)
    assert table.returncode == 0
    assert OLD_ID in table.stdout
    assert "2 live secrets are sealed under keys not configured" in table.stdout
    bad = await asyncio.to_thread(
        admin, database_url, offline, "status", master_key=NEW, previous_master_keys="bm9"
    )
    assert bad.returncode == 3
    assert bad.stderr.splitlines() == [
        "outpost: item 1 of OUTPOST_SECRETS__PREVIOUS_MASTER_KEYS is not a master key: it must be 32 random "
        "bytes in base64 (e.g. the output of `openssl rand -base64 32`)"
    ]
    for done in (missing, lacking, table, bad):
        assert OLD not in done.stdout + done.stderr
        assert NEW not in done.stdout + done.stderr
