"""A tenant's monthly budget in the policy patch: dollars in, micro-USD stored, bad amounts refused."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from outpost.cli.server import policy_update
from outpost.errors import InvalidInput
from outpost.schemas.tenants import TenantPolicyUpdate


@pytest.mark.parametrize(
    ("body", "current", "stored"),
    [
        ({"monthly_budget_usd": 50}, None, 50_000_000),
        ({"monthly_budget_usd": 0.015}, 7, 15_000),
        ({"monthly_budget_usd": 0}, 7, 0),
        ({"monthly_budget_usd": 10_000_000}, None, 10_000_000_000_000),
        ({"monthly_budget_usd": None}, 7, None),
        ({}, 7, 7),
    ],
)
def test_a_budget_patch_sets_clears_or_keeps_the_budget(
    body: dict[str, Any], current: int | None, stored: int | None
) -> None:
    assert TenantPolicyUpdate.model_validate(body).merged_monthly_budget(current) == stored


@pytest.mark.parametrize(
    "amount", [-0.01, 10_000_000.01, 1e308, float("nan"), float("inf"), "5", True, [], {"usd": 5}]
)
def test_a_negative_absurd_or_non_numeric_budget_is_refused(amount: object) -> None:
    with pytest.raises(ValidationError) as refused:
        TenantPolicyUpdate.model_validate({"monthly_budget_usd": amount})
    assert refused.value.errors()[0]["loc"][0] == "monthly_budget_usd"


def test_the_cli_options_become_the_same_patch() -> None:
    options: dict[str, Any] = {"clear_limits": False, "clear_egress": False}
    assert policy_update({}, (), **options, budget_usd=12.5).model_dump(exclude_unset=True) == {
        "monthly_budget_usd": 12.5
    }
    cleared = policy_update({}, (), **options, clear_budget=True)
    assert cleared.model_dump(exclude_unset=True) == {"monthly_budget_usd": None}
    untouched = policy_update({"max_pids": 8}, (), **options)
    assert "monthly_budget_usd" not in untouched.model_fields_set


@pytest.mark.parametrize(
    ("budget", "clear", "message"),
    [
        (-1.0, False, "--monthly-budget-usd: Input should be greater than or equal to 0"),
        (float("nan"), False, "--monthly-budget-usd: Input should be a finite number"),
        (2e7, False, "--monthly-budget-usd: Input should be less than or equal to 10000000"),
        (5.0, True, "give either --monthly-budget-usd or --clear-budget, not both"),
    ],
)
def test_bad_cli_budgets_name_the_option(budget: float, clear: bool, message: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        policy_update({}, (), clear_limits=False, clear_egress=False, budget_usd=budget, clear_budget=clear)
    assert refused.value.detail == message
