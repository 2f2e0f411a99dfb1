"""A tenant's cap on dispatches at once in the policy patch and in `outpost tenants set`."""

from __future__ import annotations

from typing import Any

import pytest

from outpost.cli.server import policy_update
from outpost.errors import InvalidInput
from outpost.schemas.tenants import TenantPolicyUpdate

OPTIONS: dict[str, Any] = {"clear_limits": False, "clear_egress": False}


@pytest.mark.parametrize(
    ("body", "current", "stored"),
    [({"max_concurrent_dispatches": 3}, None, 3), ({"max_concurrent_dispatches": None}, 3, None), ({}, 3, 3)],
)
def test_a_cap_patch_sets_clears_or_keeps_the_cap(
    body: dict[str, Any], current: int | None, stored: int | None
) -> None:
    assert TenantPolicyUpdate.model_validate(body).merged_concurrency_cap(current) == stored


def test_the_cli_options_become_the_same_patch() -> None:
    assert policy_update({}, (), **OPTIONS, concurrency=(4, False)).model_dump(exclude_unset=True) == {
        "max_concurrent_dispatches": 4
    }
    cleared = policy_update({}, (), **OPTIONS, concurrency=(None, True))
    assert cleared.model_dump(exclude_unset=True) == {"max_concurrent_dispatches": None}
    assert "max_concurrent_dispatches" not in policy_update({"max_pids": 8}, (), **OPTIONS).model_fields_set


@pytest.mark.parametrize(
    ("concurrency", "message"),
    [((0, False), "--max-concurrent-dispatches: "), ((-2, False), "--max-concurrent-dispatches: "),
     ((2, True), "give either --max-concurrent-dispatches or --clear-concurrency-cap")],
)  # fmt: skip
def test_bad_cli_caps_are_refused_naming_the_option(
    concurrency: tuple[int | None, bool], message: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        policy_update({}, (), **OPTIONS, concurrency=concurrency)
    assert refused.value.detail.startswith(message)
