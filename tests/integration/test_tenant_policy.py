"""Per-tenant policy: caps below the server's limits and egress hosts, set by admins over the API and CLI."""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from outpost.domain.ids import new_ulid
from outpost.sandbox.base import Gate, Sandbox, SandboxRun, SandboxSpec
from tests.conftest import MakeServer, Server
from tests.integration.api_checks import assert_invalid, assert_problem, list_all
from tests.integration.helpers import submit, wait_for_status
from tests.integration.processes import OUTPOST
from tests.integration.sandbox_wrappers import WrappedSandbox, wrap_server_sandboxes

# The server's own caps (the settings' defaults), which a tenant's caps may lower.
SERVER_MEMORY_MB = 4096
SERVER_MAX_TIMEOUT_S = 24 * 3600
SERVER_DEFAULT_TIMEOUT_S = 3600
CAPS = {"memory_mb": 1024, "pids": 64, "cpu_cores": 0.5, "disk_mb": 100, "timeout_s": 600}
NO_CAPS = dict.fromkeys(CAPS)
NO_LIMITS = dict.fromkeys(("memory_mb", "pids", "cpu_cores", "disk_mb"))  # a dispatch's `limits`


@pytest.fixture
async def server(make_server: MakeServer) -> Server:
    return await make_server(worker={"enabled": False}, limits={"requests_per_s": 0})


async def tenant_id_of(server: Server, headers: dict[str, str]) -> str:
    response = await server.client.get("/v1/keys", headers=headers)
    assert response.status_code == 200, response.text
    tenant_id: str = response.json()[0]["tenant_id"]
    return tenant_id


async def patch_tenant(server: Server, admin: dict[str, str], tenant_id: str, body: Any) -> dict[str, Any]:
    response = await server.client.patch(f"/v1/tenants/{tenant_id}", json=body, headers=admin)
    assert response.status_code == 200, response.text
    policy: dict[str, Any] = response.json()
    return policy


async def read_tenant(server: Server, admin: dict[str, str], tenant_id: str) -> dict[str, Any]:
    response = await server.client.get(f"/v1/tenants/{tenant_id}", headers=admin)
    assert response.status_code == 200, response.text
    policy: dict[str, Any] = response.json()
    return policy


async def capped_tenant(server: Server, caps: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """A new tenant with these caps; returns (admin headers, tenant headers)."""
    admin = await server.new_tenant(admin=True)
    tenant = await server.new_tenant()
    await patch_tenant(server, admin, await tenant_id_of(server, tenant), {"limits": caps})
    return admin, tenant


async def post_dispatch(server: Server, headers: dict[str, str], **fields: Any) -> Any:
    return await server.client.post(
        "/v1/dispatches", json={"agent": "shell", "task": "true", **fields}, headers=headers
    )


async def test_an_admin_reads_and_patches_a_tenant_policy(server: Server) -> None:
    admin = await server.new_tenant(admin=True)
    tenant_id = await tenant_id_of(server, await server.new_tenant("acme"))
    fresh = await read_tenant(server, admin, tenant_id)
    created_at = fresh["created_at"]
    assert fresh == {
        "id": tenant_id,
        "name": "acme",
        "created_at": created_at,
        "limits": None,
        "egress_allow": [],
        "monthly_budget_usd": None,
        "max_concurrent_dispatches": None,
    }
    patched = await patch_tenant(
        server, admin, tenant_id, {"limits": CAPS, "egress_allow": ["pypi.org", "*.npmjs.org:8443"]}
    )
    assert patched == {**fresh, "limits": CAPS, "egress_allow": ["pypi.org", "*.npmjs.org:8443"]}
    assert await read_tenant(server, admin, tenant_id) == patched


async def test_a_patch_merges_caps_and_replaces_or_clears_the_rest(server: Server) -> None:
    admin = await server.new_tenant(admin=True)
    tenant_id = await tenant_id_of(server, await server.new_tenant())
    await patch_tenant(server, admin, tenant_id, {"limits": {"pids": 64}, "egress_allow": ["a.test"]})
    merged = await patch_tenant(server, admin, tenant_id, {"limits": {"memory_mb": 1024}})
    assert merged["limits"] == {**NO_CAPS, "pids": 64, "memory_mb": 1024}
    assert merged["egress_allow"] == ["a.test"]
    removed = await patch_tenant(
        server, admin, tenant_id, {"limits": {"pids": None}, "egress_allow": ["b.test"]}
    )
    assert (removed["limits"], removed["egress_allow"]) == ({**NO_CAPS, "memory_mb": 1024}, ["b.test"])
    assert await patch_tenant(server, admin, tenant_id, {}) == removed
    cleared = await patch_tenant(server, admin, tenant_id, {"limits": None, "egress_allow": None})
    assert (cleared["limits"], cleared["egress_allow"]) == (None, [])
    assert await read_tenant(server, admin, tenant_id) == cleared


async def test_a_dispatch_over_its_tenant_cap_is_refused_naming_the_field_and_the_tenant(
    server: Server, subtests: pytest.Subtests
) -> None:
    _, tenant = await capped_tenant(server, CAPS)
    over = [
        ({"limits": {"memory_mb": 1025}}, "limits.memory_mb", 1024),
        ({"limits": {"pids": 65}}, "limits.pids", 64),
        ({"limits": {"cpu_cores": 0.51}}, "limits.cpu_cores", 0.5),
        ({"limits": {"disk_mb": 101}}, "limits.disk_mb", 100),
        ({"timeout_s": 601}, "timeout_s", 600),
    ]
    for fields, field, cap in over:
        with subtests.test(field):
            body = assert_invalid(await post_dispatch(server, tenant, **fields), field)
            assert body["detail"] == f"{field} must be at most {cap} for this tenant"
    assert await list_all(server.client, tenant) == []
    sandbox_caps = {name: cap for name, cap in CAPS.items() if name != "timeout_s"}
    at_caps = await submit(server.client, tenant, "true", limits=sandbox_caps, timeout_s=600)
    below = await submit(server.client, tenant, "true", limits={"memory_mb": 16, "pids": 8}, timeout_s=1)
    assert at_caps["limits"] == sandbox_caps
    assert below["limits"] == {"memory_mb": 16, "pids": 8, "cpu_cores": 0.5, "disk_mb": 100}
    assert (at_caps["timeout_s"], below["timeout_s"]) == (600, 1)


async def test_a_dispatch_refused_for_its_tenant_cap_leaves_its_idempotency_key_unused(
    server: Server,
) -> None:
    # The caps are checked in the transaction that would store the dispatch: refused, it stores nothing.
    _, tenant = await capped_tenant(server, CAPS)
    keyed = {**tenant, "Idempotency-Key": "cap-check-1"}
    assert_invalid(await post_dispatch(server, keyed, limits={"memory_mb": 4096}), "limits.memory_mb")
    assert await list_all(server.client, tenant) == []
    accepted = await post_dispatch(server, keyed, limits={"memory_mb": 16})
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["limits"]["memory_mb"] == 16


async def test_a_dispatch_without_limits_runs_with_its_tenant_caps(server: Server) -> None:
    _, tenant = await capped_tenant(server, {"memory_mb": 1024, "timeout_s": 600})
    submitted = await submit(server.client, tenant, "true")
    expected = {**NO_LIMITS, "memory_mb": 1024}
    assert (submitted["limits"], submitted["timeout_s"]) == (expected, 600)
    read = (await server.client.get(f"/v1/dispatches/{submitted['id']}", headers=tenant)).json()
    assert (read["limits"], read["timeout_s"]) == (expected, 600)
    some = await submit(server.client, tenant, "true", limits={"pids": 100})
    assert some["limits"] == {**expected, "pids": 100}
    uncapped = await submit(server.client, await server.new_tenant(), "true")
    assert (uncapped["limits"], uncapped["timeout_s"]) == (None, SERVER_DEFAULT_TIMEOUT_S)


async def test_a_tenant_timeout_cap_lowers_the_default_and_bounds_timeout_s(server: Server) -> None:
    _, tenant = await capped_tenant(server, {"timeout_s": 120})
    assert (await submit(server.client, tenant, "true"))["timeout_s"] == 120
    assert (await submit(server.client, tenant, "true", timeout_s=120))["timeout_s"] == 120
    refused = assert_invalid(await post_dispatch(server, tenant, timeout_s=121), "timeout_s")
    assert refused["detail"] == "timeout_s must be at most 120 for this tenant"
    _, loose = await capped_tenant(server, {"timeout_s": 7200})
    assert (await submit(server.client, loose, "true"))["timeout_s"] == SERVER_DEFAULT_TIMEOUT_S


async def test_a_tenant_cap_above_the_servers_is_stored_but_does_not_raise_it(server: Server) -> None:
    high = {"memory_mb": SERVER_MEMORY_MB * 2, "timeout_s": SERVER_MAX_TIMEOUT_S * 2}
    admin, tenant = await capped_tenant(server, high)
    stored = await read_tenant(server, admin, await tenant_id_of(server, tenant))
    assert stored["limits"] == {**NO_CAPS, **high}
    over = assert_invalid(
        await post_dispatch(server, tenant, limits={"memory_mb": SERVER_MEMORY_MB + 1}), "limits.memory_mb"
    )
    assert over["detail"] == f"limits.memory_mb must be at most {SERVER_MEMORY_MB} on this server"
    late = assert_invalid(
        await post_dispatch(server, tenant, timeout_s=SERVER_MAX_TIMEOUT_S + 1), "timeout_s"
    )
    assert late["detail"] == f"timeout_s must be at most {SERVER_MAX_TIMEOUT_S} on this server"
    plain = await submit(server.client, tenant, "true")
    assert (plain["limits"], plain["timeout_s"]) == (None, SERVER_DEFAULT_TIMEOUT_S)
    at_server = await submit(server.client, tenant, "true", limits={"memory_mb": SERVER_MEMORY_MB})
    assert at_server["limits"] == {**NO_LIMITS, "memory_mb": SERVER_MEMORY_MB}


async def test_caps_apply_to_dispatches_submitted_after_the_change_only(server: Server) -> None:
    admin, tenant = await capped_tenant(server, {"memory_mb": 1024})
    before = await submit(server.client, tenant, "true")
    await patch_tenant(server, admin, await tenant_id_of(server, tenant), {"limits": {"memory_mb": 512}})
    after = await submit(server.client, tenant, "true")
    assert (before["limits"]["memory_mb"], after["limits"]["memory_mb"]) == (1024, 512)
    read = (await server.client.get(f"/v1/dispatches/{before['id']}", headers=tenant)).json()
    assert read["limits"]["memory_mb"] == 1024


async def test_tenant_keys_cannot_read_or_change_tenants_and_unknown_ids_are_404(server: Server) -> None:
    admin = await server.new_tenant(admin=True)
    tenant = await server.new_tenant()
    own_id = await tenant_id_of(server, tenant)
    other_id = await tenant_id_of(server, await server.new_tenant())
    for tenant_id in (own_id, other_id):
        assert_problem(await server.client.get(f"/v1/tenants/{tenant_id}", headers=tenant), 403)
        for body in ({"limits": {"memory_mb": 8192}}, {"limits": {"memory_mb": "bad"}, "extra": 1}):
            assert_problem(
                await server.client.patch(f"/v1/tenants/{tenant_id}", json=body, headers=tenant), 403
            )
    assert (await read_tenant(server, admin, own_id))["limits"] is None
    for unknown in (new_ulid(), "no-such-tenant", "x" * 300):
        assert_problem(await server.client.get(f"/v1/tenants/{unknown}", headers=admin), 404)
        patched = await server.client.patch(f"/v1/tenants/{unknown}", json={"limits": None}, headers=admin)
        assert_problem(patched, 404)
    assert_problem(await server.client.get(f"/v1/tenants/{own_id}"), 401)


BAD_PATCHES = [
    ("limits-not-object", {"limits": 5}, "limits"),
    ("limits-list", {"limits": [1024]}, "limits"),
    ("memory-str", {"limits": {"memory_mb": "lots"}}, "limits.memory_mb"),
    ("memory-fraction", {"limits": {"memory_mb": 1.5}}, "limits.memory_mb"),
    ("memory-tiny", {"limits": {"memory_mb": 1}}, "limits.memory_mb"),
    ("pids-negative", {"limits": {"pids": -5}}, "limits.pids"),
    ("cpu-negative", {"limits": {"cpu_cores": -0.5}}, "limits.cpu_cores"),
    ("disk-zero", {"limits": {"disk_mb": 0}}, "limits.disk_mb"),
    ("timeout-negative", {"limits": {"timeout_s": -1}}, "limits.timeout_s"),
    ("timeout-bigger-than-int32", {"limits": {"timeout_s": 2**31}}, "limits.timeout_s"),
    ("limits-unknown-cap", {"limits": {"disk_tb": 1}}, "limits.disk_tb"),
    ("unknown-field", {"limit": {"pids": 64}}, "limit"),
    ("unknown-field-beside-a-good-one", {"egress_allow": ["ok.test"], "name": "x"}, "name"),
    ("egress-not-list", {"egress_allow": "ok.test"}, "egress_allow"),
    ("egress-ip-literal", {"egress_allow": ["ok.test", "169.254.169.254"]}, "egress_allow.1"),
    ("egress-ipv6-literal", {"egress_allow": ["[::1]:443"]}, "egress_allow.0"),
    ("egress-numeric-host", {"egress_allow": ["2130706433"]}, "egress_allow.0"),
    ("egress-bare-wildcard", {"egress_allow": ["*"]}, "egress_allow.0"),
    ("egress-bad-port", {"egress_allow": ["ok.test:99999"]}, "egress_allow.0"),
    ("egress-int", {"egress_allow": [443]}, "egress_allow.0"),
    ("egress-too-many", {"egress_allow": [f"h{i}.test" for i in range(33)]}, "egress_allow"),
]


async def test_a_bad_patch_is_a_422_naming_the_field_and_changes_nothing(
    server: Server, subtests: pytest.Subtests
) -> None:
    admin = await server.new_tenant(admin=True)
    tenant_id = await tenant_id_of(server, await server.new_tenant())
    before = await patch_tenant(server, admin, tenant_id, {"limits": CAPS, "egress_allow": ["keep.test"]})
    for case, body, field in BAD_PATCHES:
        with subtests.test(case):
            response = await server.client.patch(f"/v1/tenants/{tenant_id}", json=body, headers=admin)
            assert_invalid(response, field)
    raw_headers = {**admin, "Content-Type": "application/json"}
    with subtests.test("not-json"):
        response = await server.client.patch(
            f"/v1/tenants/{tenant_id}", content=b"{limits", headers=raw_headers
        )
        assert_problem(response, 400)
    with subtests.test("not-an-object"):
        response = await server.client.patch(f"/v1/tenants/{tenant_id}", content=b"[]", headers=raw_headers)
        assert_invalid(response, "body")
    assert await read_tenant(server, admin, tenant_id) == before


class SpecRecorder(WrappedSandbox):
    """Keeps every SandboxSpec it is asked to start."""

    def __init__(self, inner: Sandbox, specs: list[SandboxSpec]) -> None:
        super().__init__(inner)
        self.specs = specs

    async def start(self, spec: SandboxSpec, gate: Gate | None = None) -> SandboxRun:
        self.specs.append(spec)
        return await self.inner.start(spec, gate)


@pytest.fixture
def recorded_specs(monkeypatch: pytest.MonkeyPatch) -> list[SandboxSpec]:
    """Servers started by this test record the specs their sandbox starts; the list fills as they do."""
    specs: list[SandboxSpec] = []
    wrap_server_sandboxes(monkeypatch, lambda inner: SpecRecorder(inner, specs))
    return specs


async def test_tenant_egress_hosts_read_when_the_run_starts_reach_the_sandbox(
    make_server: MakeServer, recorded_specs: list[SandboxSpec]
) -> None:
    api = await make_server(worker={"enabled": False}, limits={"requests_per_s": 0})
    admin = await api.new_tenant(admin=True)
    tenant = await api.new_tenant()
    tenant_id = await tenant_id_of(api, tenant)
    await patch_tenant(api, admin, tenant_id, {"egress_allow": ["old.test"]})
    queued = await submit(api.client, tenant, "true", egress_allow=["own.test:8443"])
    # Changed while the dispatch waits: the run gets the list as it is when it starts.
    await patch_tenant(api, admin, tenant_id, {"egress_allow": ["pypi.org", "*.npmjs.org"]})
    their_headers = await api.new_tenant()
    theirs = await submit(api.client, their_headers, "true", egress_allow=["theirs.test"])
    worker = await make_server(limits={"requests_per_s": 0})
    await wait_for_status(worker.client, tenant, queued["id"], {"succeeded"})
    await wait_for_status(worker.client, their_headers, theirs["id"], {"succeeded"})
    started = {spec.run_id.split(".")[0]: spec.egress_allow for spec in recorded_specs}
    assert started == {
        queued["id"]: ("pypi.org", "*.npmjs.org", "own.test:8443"),
        theirs["id"]: ("theirs.test",),
    }


@dataclass(frozen=True)
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


async def run_cli(env: dict[str, str], *args: str) -> CliResult:
    """Run `outpost ARGS` as an admin on the server machine would (offline: straight to the database)."""
    process = await asyncio.create_subprocess_exec(
        OUTPOST, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return CliResult(process.returncode, stdout.decode(), stderr.decode())


@pytest.fixture
def cli_env(tmp_path: Path, database_url: str) -> dict[str, str]:
    """The offline admin CLI's environment: this test's database, and its servers' master key."""
    base = {name: value for name, value in os.environ.items() if not name.startswith("OUTPOST_")}
    return {
        **base, "OUTPOST_DATA_DIR": str(tmp_path / "cli-data"), "OUTPOST_DATABASE_URL": database_url,
        "OUTPOST_SECRETS__MASTER_KEY_FILE": str(tmp_path / "master.key"),
    }  # fmt: skip


@pytest.mark.slow
async def test_the_cli_sets_and_shows_the_policy_the_api_serves(
    server: Server, cli_env: dict[str, str]
) -> None:
    admin = await server.new_tenant(admin=True)
    tenant_id = await tenant_id_of(server, await server.new_tenant("acme"))
    options = ["--max-memory-mb", "1024", "--max-cpu-cores", "0.5", "--egress-allow", "pypi.org"]
    first = await run_cli(cli_env, "tenants", "set", "acme", *options, "--egress-allow", "*.npmjs.org:8443")
    assert first.exit_code == 0, first.stderr
    more = await run_cli(cli_env, "tenants", "set", "acme", "--max-timeout-s", "600")
    assert more.exit_code == 0, more.stderr
    shown = await run_cli(cli_env, "tenants", "show", "acme")
    assert shown.exit_code == 0, shown.stderr
    policy = json.loads(shown.stdout)
    assert policy == json.loads(more.stdout) == await read_tenant(server, admin, tenant_id)
    assert policy["limits"] == {**NO_CAPS, "memory_mb": 1024, "cpu_cores": 0.5, "timeout_s": 600}
    assert policy["egress_allow"] == ["pypi.org", "*.npmjs.org:8443"]


@pytest.mark.slow
async def test_bad_cli_input_is_one_line_and_a_non_zero_exit_and_stores_nothing(
    server: Server, cli_env: dict[str, str]
) -> None:
    admin = await server.new_tenant(admin=True)
    tenant_id = await tenant_id_of(server, await server.new_tenant("acme"))
    before = await patch_tenant(
        server, admin, tenant_id, {"limits": {"pids": 64}, "egress_allow": ["a.test"]}
    )
    bad = [
        (["set", "acme", "--max-memory-mb", "1024", "--max-pids", "3"], "outpost: --max-pids: "),
        (
            ["set", "acme", "--egress-allow", "ok.test", "--egress-allow", "10.0.0.1"],
            "outpost: --egress-allow: ",
        ),
        (["set", "nobody", "--max-pids", "64"], "outpost: no tenant named 'nobody'"),
        (["show", "nobody"], "outpost: no tenant named 'nobody'"),
    ]
    # At once: each run spends seconds importing the server's modules.
    results = await asyncio.gather(*(run_cli(cli_env, "tenants", *args) for args, _ in bad))
    for (args, expected), done in zip(bad, results, strict=True):
        assert (done.exit_code, done.stdout) == (1, ""), (args, done)
        assert len(done.stderr.splitlines()) == 1, done.stderr
        assert done.stderr.startswith(expected), done.stderr
    assert await read_tenant(server, admin, tenant_id) == before
