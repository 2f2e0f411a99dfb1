"""`outpost audit verify` and `outpost audit export` as an operator runs them: real `outpost` processes,
on a database someone changed behind the server's back."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from outpost.audit.chain import KEY_PURPOSE, ChainKey, mac_of
from outpost.secrets.box import SecretBox
from outpost.secrets.master_key import encode_master_key, load_master_key
from tests.conftest import MakeServer, Server
from tests.integration.audit_checks import tamper
from tests.integration.processes import OUTPOST, serving

EXIT_UNAVAILABLE = 3
EXIT_AUDIT_BROKEN = 5


@dataclass
class Done:
    code: int
    stdout: str
    stderr: str


def outpost(*args: str, env: dict[str, str]) -> Done:
    base = {name: value for name, value in os.environ.items() if not name.startswith("OUTPOST_")}
    done = subprocess.run(
        [OUTPOST, *args], env={**base, **env}, capture_output=True, text=True, timeout=60, check=False
    )
    return Done(done.returncode, done.stdout, done.stderr)


def offline_env(tmp_path: Path, database_url: str) -> dict[str, str]:
    """What an operator on the server's machine sets: its database and its master key file."""
    return {
        "OUTPOST_DATABASE_URL": database_url,
        "OUTPOST_SECRETS__MASTER_KEY_FILE": str(tmp_path / "master.key"),
        "OUTPOST_DATA_DIR": str(tmp_path / "operator"),
    }


async def five_rows(make_server: MakeServer) -> Server:
    """A server whose audit log holds five rows: a tenant made, then four keys."""
    server = await make_server(worker={"enabled": False}, limits={"requests_per_s": 0})
    headers = await server.new_tenant()
    for _ in range(4):
        assert (await server.client.post("/v1/keys", json={}, headers=headers)).status_code == 201
    return server


TAMPERING = {
    "edited": (["UPDATE audit_log SET target = 'elsewhere' WHERE seq = 3"], "at seq 3: it was edited"),
    "deleted": (["DELETE FROM audit_log WHERE seq = 3"], "at seq 3: seq 3 is missing: a row was deleted"),
    "reordered": (
        [
            "UPDATE audit_log SET seq = 0 WHERE seq = 4",
            "UPDATE audit_log SET seq = 4 WHERE seq = 2",
            "UPDATE audit_log SET seq = 2 WHERE seq = 0",
        ],
        "at seq 2: it holds the row written as seq 4: rows were reordered",
    ),
    "truncated": (
        ["DELETE FROM audit_log WHERE seq = 5"],
        "at seq 5: the head is at seq 5 but the last row is seq 4: rows were deleted from the end",
    ),
    "head moved back": (
        ["UPDATE audit_head SET seq = 4, hash = (SELECT hash FROM audit_log WHERE seq = 4)"],
        "at seq 5: rows run past the head (seq 4) to seq 5: the head was edited",
    ),
    "cut off with the head moved back": (
        [
            "DELETE FROM audit_log WHERE seq > 3",
            "UPDATE audit_head SET seq = 3, hash = (SELECT hash FROM audit_log WHERE seq = 3)",
        ],
        "at seq 3: the head at seq 3 is not sealed by the audit key: it was edited or moved back",
    ),
    "head unsealed": (
        ["UPDATE audit_head SET mac = NULL"],
        "at seq 5: the head at seq 5 is not sealed by the audit key: its mac is empty",
    ),
}


@pytest.mark.parametrize("kind", list(TAMPERING))
async def test_verify_passes_until_the_log_is_changed_and_then_names_the_row(
    make_server: MakeServer, tmp_path: Path, database_url: str, kind: str
) -> None:
    server = await five_rows(make_server)
    env = offline_env(tmp_path, database_url)
    passed = outpost("audit", "verify", env=env)
    assert (passed.code, passed.stderr) == (0, ""), passed
    assert passed.stdout.startswith("audit log OK: 5 rows, seq 1 to 5, head ")
    statements, named = TAMPERING[kind]
    for statement in statements:
        await tamper(server, statement)
    failed = outpost("audit", "verify", env=env)
    assert failed.code == EXIT_AUDIT_BROKEN, failed
    assert failed.stdout == ""
    assert failed.stderr.startswith(f"outpost: the audit log does not verify {named}"), failed.stderr
    assert failed.stderr.count("\n") == 1


async def test_verify_with_the_wrong_or_no_master_key_says_so_and_decrypts_nothing(
    make_server: MakeServer, tmp_path: Path, database_url: str
) -> None:
    await five_rows(make_server)
    wrong = {
        **offline_env(tmp_path, database_url),
        "OUTPOST_SECRETS__MASTER_KEY": encode_master_key(b"\x09" * 32),
    }
    done = outpost("audit", "verify", env=wrong)
    assert done.code == EXIT_UNAVAILABLE, done
    assert "no audit row checked verifies under the master keys given (seq 1 and 5)" in done.stderr
    assert done.stderr.count("\n") == 1
    missing = {
        **offline_env(tmp_path, database_url),
        "OUTPOST_SECRETS__MASTER_KEY_FILE": str(tmp_path / "none"),
    }
    done = outpost("audit", "verify", env=missing)
    assert done.code == EXIT_UNAVAILABLE, done
    assert "no master key" in done.stderr
    assert not (tmp_path / "none").exists()  # verifying never makes a key


def test_verify_without_a_database_creates_none(tmp_path: Path) -> None:
    absent = tmp_path / "absent.db"
    done = outpost("audit", "verify", env=offline_env(tmp_path, f"sqlite:///{absent}"))
    assert done.code == 1, done
    assert done.stderr.startswith(f"outpost: no database at {absent}: set OUTPOST_DATA_DIR")
    assert done.stderr.count("\n") == 1
    assert not absent.exists()


@pytest.mark.slow
def test_an_export_holds_every_row_as_stored_and_each_still_verifies(
    tmp_path: Path, database_url: str
) -> None:
    data_dir = tmp_path / "server"
    with serving(data_dir, env={"OUTPOST_DATABASE_URL": database_url}) as server:
        made = outpost("tenants", "create", "operators", "--admin", env=server.full_env())
        assert made.code == 0, made
        admin_key = made.stdout.strip().splitlines()[-1]
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {admin_key}"}) as api:
            for name in ("ci", "deploy"):
                assert api.post("/v1/keys", json={"name": name}).status_code == 201
            assert (
                api.get("/v1/keys", headers={"Authorization": "Bearer op_badbadbadbad_x"}).status_code == 401
            )
            listed = api.get("/v1/audit").json()["items"]
        client_env = {"OUTPOST_URL": server.url, "OUTPOST_API_KEY": admin_key}
        exported = outpost("audit", "export", "--output", str(tmp_path / "audit.jsonl"), env=client_env)
        assert exported.code == 0, exported
        assert exported.stderr == "exported 4 audit rows\n"
        tail = outpost("audit", "export", "--after", "2", env=client_env)
        verified = outpost("audit", "verify", env=server.full_env())  # offline, beside the running server
    lines = (tmp_path / "audit.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert rows == listed
    assert [row["action"] for row in rows] == ["tenant.create", "key.create", "key.create", "auth.failed"]
    assert rows[0]["actor"].startswith("cli")
    assert [json.loads(line)["seq"] for line in tail.stdout.splitlines()] == [3, 4]
    assert verified.stdout.startswith("audit log OK: 4 rows"), verified
    key = ChainKey(SecretBox(load_master_key(None, data_dir / "master.key")).derive(KEY_PURPOSE))
    previous = "0" * 64
    for row in rows:
        fields = [row[name] for name in ("seq", "created_at", "tenant_id", "actor", "action", "target")]
        fields[1] = datetime.fromisoformat(row["created_at"])
        raw = [*fields, row["source_ip"], row["detail"], row["prev_hash"], row["hash"]]
        assert row["prev_hash"] == previous
        assert mac_of(key, raw) == row["hash"]
        previous = row["hash"]
