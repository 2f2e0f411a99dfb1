"""Letting calls through against a limit while others are in flight, and bounding a call's cost from
its request."""

from __future__ import annotations

import json

import pytest

from outpost.agents.catalog import default_catalog, resolve_model
from outpost.domain.dispatch import Tier
from outpost.domain.reservations import Pot, Verdict
from outpost.gateway.call_bounds import PROVIDER_ADDED_TOKENS, PlannedCall, plan_call
from outpost.worker.run_meter import RunMeter


@pytest.mark.parametrize(
    ("pot", "bound", "verdict"),
    [
        (Pot(None, 10**9, 10**9, 50), 10**9, Verdict.GO),  # no limit
        (Pot(100, 100), 1, Verdict.SPENT),  # reached
        (Pot(100, 150), 1, Verdict.SPENT),  # passed
        (Pot(100, 99, 0, 0), 1_000, Verdict.GO),  # alone: may go over by its own cost
        (Pot(100, 50, 30, 2), 20, Verdict.GO),  # fits exactly beside the calls in flight
        (Pot(100, 50, 30, 2), 21, Verdict.WAIT),  # would not: waits for one of them
        (Pot(100, 99, 500, 1), 1, Verdict.WAIT),  # a call in flight may use up the rest
    ],
)
def test_a_call_goes_when_it_fits_or_is_alone_and_never_once_the_limit_is_reached(
    pot: Pot, bound: int, verdict: Verdict
) -> None:
    assert pot.verdict(bound) is verdict


@pytest.mark.parametrize(
    ("body", "limit"),
    [
        ({"model": "m", "max_tokens": 32000, "messages": []}, 32000),  # Anthropic Messages
        ({"model": "m", "max_completion_tokens": 900}, 900),  # Chat Completions
        ({"model": "m", "max_output_tokens": 4096}, 4096),  # OpenAI Responses
        ({"generationConfig": {"maxOutputTokens": 8192}}, 8192),  # Gemini
        ({"max_tokens": 10, "max_completion_tokens": 20}, 20),  # both: the larger binds
        ({"model": "m"}, None),
        ({"max_tokens": True}, None),  # not a count
        ({"max_tokens": -5}, None),
        ({"max_tokens": "1000"}, None),
        ({"generationConfig": "x"}, None),
    ],
)
def test_the_output_limit_is_read_from_whichever_field_the_wire_api_names(
    body: dict[str, object], limit: int | None
) -> None:
    raw = json.dumps(body).encode()
    planned = plan_call("m", raw, body)
    assert planned.output_tokens_bound == limit
    assert planned.input_tokens_bound == len(raw) + PROVIDER_ADDED_TOKENS


def test_a_body_that_is_not_json_is_bounded_by_its_size_and_the_cap() -> None:
    assert plan_call(None, b"\x00" * 50, None) == PlannedCall(None, 50 + PROVIDER_ADDED_TOKENS, None)


def test_the_bound_prices_input_at_the_dearest_input_price_and_output_at_the_output_price() -> None:
    choice = resolve_model(default_catalog(), "claude", Tier.BALANCED, None)
    assert choice is not None
    meter = RunMeter(default_catalog(), choice, lambda kind, data: None)
    prices = choice.model
    dearest = max(prices.input, prices.cache_read, prices.cache_write)
    bounded = meter.bound_micro_usd(PlannedCall(None, 10_000, 2_000), output_tokens_cap=128_000)
    assert bounded == pytest.approx(10_000 * dearest + 2_000 * prices.output, abs=1)
    uncapped = meter.bound_micro_usd(PlannedCall(None, 10_000, None), output_tokens_cap=128_000)
    assert uncapped == pytest.approx(10_000 * dearest + 128_000 * prices.output, abs=1)
