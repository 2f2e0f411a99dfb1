"""`outpost serve` with a master key that is missing, malformed, unsafe or wrong: one clear line, a non-zero
exit, no new key, nothing decrypted; and after a rotation, the new key alone serves."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import httpx
import pytest

from outpost.secrets.box import SecretBox
from outpost.secrets.master_key import encode_master_key
from tests.conftest import MakeServer
from tests.integration.processes import OUTPOST, serving

pytestmark = pytest.mark.slow

OLD_KEY, NEW_KEY = os.urandom(32), os.urandom(32)
OLD, NEW = encode_master_key(OLD_KEY), encode_master_key(NEW_KEY)
OLD_ID, NEW_ID = SecretBox(OLD_KEY).key_id, SecretBox(NEW_KEY).key_id
TENANT_KEY = "sk-tenant-key-started-under-old"
EXIT_UNAVAILABLE = 3


def outpost_env(database_url: str, data_dir: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTPOST_")}
    env |= {"OUTPOST_DATABASE_URL": database_url, "OUTPOST_DATA_DIR": str(data_dir)}
    env |= {"OUTPOST_WORKER__ENABLED": "false", "OUTPOST_LIMITS__REQUESTS_PER_S": "0"}
    return env | {f"OUTPOST_{name.upper()}": value for name, value in settings.items()}


def serve_refused(env: dict[str, str]) -> str:
    """Run `outpost serve`, which must stop at once; returns its one error line (after its info logs)."""
    done = subprocess.run(
        [OUTPOST, "serve", "--port", "0"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == EXIT_UNAVAILABLE, done.stderr
    *logged, last = done.stderr.strip().splitlines()
    assert last.startswith("outpost: "), done.stderr
    assert "Traceback" not in done.stderr
    assert all(json.loads(line)["level"] in {"info", "warning"} for line in logged), done.stderr
    for secret in (OLD, NEW, TENANT_KEY):
        assert secret not in done.stderr
    return last


@pytest.fixture
async def sealed_under_old(make_server: MakeServer) -> None:
    """The test's database, holding one tenant's provider key sealed under the OLD master key."""
    server = await make_server(
        worker={"enabled": False}, secrets={"master_key": OLD},
        providers={"openai": {"base_url": "http://127.0.0.1:9/openai"}},
    )  # fmt: skip
    response = await server.client.patch(
        "/v1/providers/openai", json={"api_key": TENANT_KEY}, headers=await server.new_tenant()
    )
    assert response.status_code == 200, response.text


@pytest.mark.usefixtures("sealed_under_old")
async def test_serve_with_another_master_key_names_both_key_ids(database_url: str, tmp_path: Path) -> None:
    env = outpost_env(database_url, tmp_path / "data", secrets__master_key=NEW)
    line = await asyncio.to_thread(serve_refused, env)
    assert line.startswith("outpost: stored secrets were sealed under another master key")
    assert f"key id {OLD_ID} (1 live)" in line
    assert f"{NEW_ID} (current)" in line
    assert "provider/openai/api_key v1" in line


@pytest.mark.usefixtures("sealed_under_old")
async def test_serve_without_a_key_while_secrets_exist_makes_no_new_key(
    database_url: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "elsewhere"
    line = await asyncio.to_thread(serve_refused, outpost_env(database_url, data_dir))
    key_file = data_dir / "master.key"
    unset = f"outpost: no master key: OUTPOST_SECRETS__MASTER_KEY is unset and the master key file {key_file}"
    assert line.startswith(f"{unset} does not exist")
    assert f"holds 1 live secrets sealed under master key id {OLD_ID}" in line
    assert not (data_dir / "master.key").exists()


@pytest.mark.parametrize(
    ("spoil", "says"),
    [
        pytest.param(lambda path: path.write_text("not a key\n"), "is not a master key", id="garbage"),
        pytest.param(lambda path: path.write_text(OLD[:20]), "is not a master key", id="truncated"),
        pytest.param(lambda path: path.mkdir(), "cannot read the master key file", id="directory"),
        pytest.param(
            lambda path: (path.write_text(OLD), path.chmod(0o644)), "can be read by others", id="0644"
        ),
        pytest.param(lambda path: path.symlink_to(path.with_name("real.key")), "cannot read", id="symlink"),
    ],
)
def test_serve_with_an_unusable_key_file_stops_in_one_line(tmp_path: Path, spoil: object, says: str) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "real.key").write_text(OLD)
    (data_dir / "real.key").chmod(0o600)
    key_file = data_dir / "master.key"
    spoil(key_file)  # type: ignore[operator]
    if key_file.is_file() and not key_file.is_symlink() and "others" not in says:
        key_file.chmod(0o600)
    line = serve_refused(outpost_env(f"sqlite+aiosqlite:///{tmp_path / 'outpost.db'}", data_dir))
    assert says in line
    assert str(key_file) in line


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("secrets__master_key", "c2hvcnQ=", "OUTPOST_SECRETS__MASTER_KEY is not a master key"),
        (
            "secrets__previous_master_keys",
            f"{OLD},c2hvcnQ=",
            "item 2 of OUTPOST_SECRETS__PREVIOUS_MASTER_KEYS",
        ),
    ],
)
def test_serve_with_a_malformed_key_setting_stops_in_one_line(
    tmp_path: Path, name: str, value: str, says: str
) -> None:
    env = outpost_env(f"sqlite+aiosqlite:///{tmp_path / 'outpost.db'}", tmp_path / "data", **{name: value})
    if name != "secrets__master_key":
        env["OUTPOST_SECRETS__MASTER_KEY"] = NEW
    assert says in serve_refused(env)
    assert not (tmp_path / "data" / "master.key").exists()


@pytest.mark.usefixtures("sealed_under_old")
async def test_after_a_reseal_the_new_key_alone_serves_and_the_old_key_alone_is_refused(
    database_url: str, tmp_path: Path
) -> None:
    overlap = outpost_env(
        database_url, tmp_path / "admin", secrets__master_key=NEW, secrets__previous_master_keys=OLD
    )
    resealed = await asyncio.to_thread(
        subprocess.run,
        [OUTPOST, "secrets", "reseal"],
        env=overlap,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert resealed.stdout == f"re-sealed 1 secrets under master key id {NEW_ID}\n", resealed.stderr

    line = await asyncio.to_thread(
        serve_refused, outpost_env(database_url, tmp_path / "old", secrets__master_key=OLD)
    )
    assert f"key id {NEW_ID} (1 live)" in line
    assert f"{OLD_ID} (current)" in line

    new_only = outpost_env(database_url, tmp_path / "new", secrets__master_key=NEW)
    settings = {name: value for name, value in new_only.items() if name.startswith("OUTPOST_")}
    with serving(tmp_path / "new", settings) as server:
        admin = await asyncio.to_thread(
            subprocess.run, [OUTPOST, "tenants", "create", "ops", "--admin"], env=server.full_env(),
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        key = admin.stdout.strip().splitlines()[-1]
        async with httpx.AsyncClient(
            base_url=server.url, headers={"Authorization": f"Bearer {key}"}
        ) as client:
            assert (await client.get("/health/ready")).status_code == 200
            response = await client.patch("/v1/providers/openai", json={"api_key": TENANT_KEY + "-2"})
            assert response.status_code == 200, response.text
        assert TENANT_KEY not in server.log_path.read_text()
