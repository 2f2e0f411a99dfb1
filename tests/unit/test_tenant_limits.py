"""A dispatch's limits come from the server's caps, lowered by its tenant's, and what it asked for."""

from __future__ import annotations

from typing import Any

import pytest

from outpost.cli.server import policy_update
from outpost.domain.limits import ServerLimits, resolve_limits
from outpost.errors import InvalidInput
from outpost.schemas.tenants import TenantPolicyUpdate

SERVER = ServerLimits(
    sandbox={"memory_mb": 4096, "pids": 1024, "cpu_cores": 2.0, "disk_mb": 2048},
    max_timeout_s=86_400,
    default_timeout_s=3600,
)


def test_without_tenant_caps_a_dispatch_gets_what_it_asked_for_and_the_server_default_timeout() -> None:
    effective = resolve_limits(SERVER, {}, {"memory_mb": 512}, None)
    assert effective.sandbox == {"memory_mb": 512}
    assert effective.timeout_s == 3600


def test_a_tenant_cap_below_the_server_fills_in_what_the_dispatch_left_out() -> None:
    tenant = {"memory_mb": 1024, "cpu_cores": 0.5, "timeout_s": 600}
    effective = resolve_limits(SERVER, tenant, {"pids": 100}, None)
    assert effective.sandbox == {"memory_mb": 1024, "cpu_cores": 0.5, "pids": 100}
    assert effective.timeout_s == 600


def test_a_dispatch_may_ask_for_less_than_its_tenant_cap_or_exactly_it() -> None:
    tenant = {"memory_mb": 1024, "timeout_s": 600}
    assert resolve_limits(SERVER, tenant, {"memory_mb": 1024}, 600).sandbox == {"memory_mb": 1024}
    effective = resolve_limits(SERVER, tenant, {"memory_mb": 100}, 30)
    assert (effective.sandbox, effective.timeout_s) == ({"memory_mb": 100}, 30)


@pytest.mark.parametrize(
    ("asked", "timeout_s", "field", "cap"),
    [
        ({"memory_mb": 1025}, None, "limits.memory_mb", "1024"),
        ({"pids": 65}, None, "limits.pids", "64"),
        ({"cpu_cores": 0.75}, None, "limits.cpu_cores", "0.5"),
        ({"disk_mb": 101}, None, "limits.disk_mb", "100"),
        ({}, 601, "timeout_s", "600"),
    ],
)
def test_asking_for_more_than_the_tenant_cap_names_the_field_and_the_tenant(
    asked: dict[str, float], timeout_s: int | None, field: str, cap: str
) -> None:
    tenant = {"memory_mb": 1024, "pids": 64, "cpu_cores": 0.5, "disk_mb": 100, "timeout_s": 600}
    with pytest.raises(InvalidInput) as raised:
        resolve_limits(SERVER, tenant, asked, timeout_s)
    assert raised.value.field == field
    assert raised.value.detail == f"{field} must be at most {cap} for this tenant"


def test_a_tenant_cap_above_the_server_changes_nothing() -> None:
    tenant = {"memory_mb": 8192, "timeout_s": 10**6}
    effective = resolve_limits(SERVER, tenant, {}, None)
    assert (effective.sandbox, effective.timeout_s) == ({}, 3600)
    with pytest.raises(InvalidInput, match=r"^limits\.memory_mb must be at most 4096 on this server$"):
        resolve_limits(SERVER, tenant, {"memory_mb": 5000}, None)
    with pytest.raises(InvalidInput, match=r"^timeout_s must be at most 86400 on this server$"):
        resolve_limits(SERVER, tenant, {}, 86_401)


def test_a_tenant_timeout_cap_above_the_default_keeps_the_default() -> None:
    assert resolve_limits(SERVER, {"timeout_s": 7200}, {}, None).timeout_s == 3600


def test_a_patch_sets_and_removes_single_caps_and_keeps_the_others() -> None:
    current = {"memory_mb": 1024, "pids": 64}
    update = TenantPolicyUpdate.model_validate({"limits": {"pids": None, "timeout_s": 60}})
    assert update.merged_limits(current) == {"memory_mb": 1024, "timeout_s": 60}
    assert update.merged_egress_allow(["a.test"]) == ["a.test"]


@pytest.mark.parametrize(
    ("body", "limits", "egress_allow"),
    [
        ({}, {"pids": 64}, ["a.test"]),
        ({"limits": None, "egress_allow": None}, None, None),
        ({"limits": {"pids": None}, "egress_allow": []}, None, None),
        ({"egress_allow": ["b.test", "*.c.test:8443"]}, {"pids": 64}, ["b.test", "*.c.test:8443"]),
    ],
)
def test_left_out_fields_stay_and_null_or_empty_clears(
    body: dict[str, Any], limits: dict[str, float] | None, egress_allow: list[str] | None
) -> None:
    update = TenantPolicyUpdate.model_validate(body)
    assert update.merged_limits({"pids": 64}) == limits
    assert update.merged_egress_allow(["a.test"]) == egress_allow


def test_cli_options_become_the_same_merge_patch() -> None:
    caps: dict[str, float | None] = {"max_memory_mb": 512, "max_pids": None, "max_timeout_s": 60}
    kept = policy_update(caps, (), clear_limits=False, clear_egress=False)
    assert kept.merged_limits({"pids": 64}) == {"pids": 64, "memory_mb": 512, "timeout_s": 60}
    assert kept.merged_egress_allow(["a.test"]) == ["a.test"]
    cleared = policy_update(caps, (), clear_limits=True, clear_egress=True)
    assert cleared.merged_limits({"pids": 64}) == {"memory_mb": 512, "timeout_s": 60}
    assert cleared.merged_egress_allow(["a.test"]) is None
    replaced = policy_update({}, ("b.test",), clear_limits=False, clear_egress=False)
    assert replaced.merged_egress_allow(["a.test"]) == ["b.test"]


@pytest.mark.parametrize(
    ("caps", "hosts", "message"),
    [
        ({"max_pids": 3}, (), "--max-pids: "),
        ({"max_cpu_cores": -1.0}, (), "--max-cpu-cores: "),
        ({"max_timeout_s": 0}, (), "--max-timeout-s: "),
        ({}, ("ok.test", "169.254.169.254"), "--egress-allow: egress entry '169.254.169.254'"),
        ({}, (), "nothing to change"),
    ],
)
def test_bad_cli_options_are_refused_naming_the_option(
    caps: dict[str, float | None], hosts: tuple[str, ...], message: str
) -> None:
    with pytest.raises(InvalidInput) as raised:
        policy_update(caps, hosts, clear_limits=False, clear_egress=False)
    assert raised.value.detail.startswith(message), raised.value.detail
