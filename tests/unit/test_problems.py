"""Errors map to RFC 9457 problem details in one table."""

from __future__ import annotations

import orjson
import pytest

from outpost import errors
from outpost.api.problems import outpost_error_response


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (errors.InvalidInput("bad", field="task"), 422),
        (errors.AuthenticationFailed("no"), 401),
        (errors.PermissionDenied("no"), 403),
        (errors.NotFound("no"), 404),
        (errors.Conflict("no"), 409),
        (errors.StaleVersion("no"), 409),
        (errors.PayloadTooLarge("no"), 413),
        (errors.RateLimited("slow", 0.2), 429),
        (errors.BudgetExceeded("spent", 0, 5_000_000), 402),
        (errors.StoreUnavailable("down"), 503),
    ],
)
def test_each_error_has_its_status_and_a_problem_body(error: errors.OutpostError, status: int) -> None:
    response = outpost_error_response(error)
    body = orjson.loads(bytes(response.body))
    assert response.status_code == status
    assert response.media_type == "application/problem+json"
    assert body["status"] == status
    assert body["detail"] == error.detail
    assert body["type"].startswith("urn:outpost:problem:")


def test_invalid_input_names_its_field() -> None:
    body = orjson.loads(bytes(outpost_error_response(errors.InvalidInput("too long", field="task")).body))
    assert body["errors"] == [{"field": "task", "message": "too long"}]


def test_auth_and_rate_limit_errors_carry_their_headers() -> None:
    assert outpost_error_response(errors.AuthenticationFailed("x")).headers["www-authenticate"] == "Bearer"
    # Whole seconds, rounded up: a client that waits as told is not refused again.
    assert outpost_error_response(errors.RateLimited("x", 2.4)).headers["retry-after"] == "3"
    assert outpost_error_response(errors.RateLimited("x", 0.01)).headers["retry-after"] == "1"


def test_a_budget_refusal_says_what_remains_of_which_budget() -> None:
    response = outpost_error_response(errors.BudgetExceeded("too much", 1_250_000, 5_000_000))
    body = orjson.loads(bytes(response.body))
    assert body["type"] == "urn:outpost:problem:budget-exceeded"
    assert (body["title"], body["remaining_usd"], body["budget_usd"]) == ("Payment required", 1.25, 5.0)
