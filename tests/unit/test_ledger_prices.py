"""Price arithmetic: exact amounts, one half-up rounding per ledger row, and a version per price table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

import pytest

from outpost.agents.catalog import default_catalog
from outpost.db.repositories.dispatches import DispatchRow
from outpost.db.repositories.ledger import MeteredEvent
from outpost.ledger.prices import (
    GIB,
    PriceTable,
    TokenCounts,
    TokenPrices,
    build_price_table,
    round_micro_usd,
)
from outpost.ledger.settings import LedgerSettings
from outpost.ledger.settlement import ledger_rows
from outpost.ledger.storage import held_storage_byte_s
from outpost.sandbox.compute import MemoryIntegral
from outpost.settings import Settings

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
PRICES = build_price_table(default_catalog(), LedgerSettings())


def _dispatch(model: str | None = "claude-sonnet-5-5") -> DispatchRow:
    return DispatchRow(
        id="01JDISPATCH0000000000000000", tenant_id="01JTENANT00000000000000000", status="succeeded",
        version=5, attempt=1, event_seq=9, agent="claude", task="t", tier="balanced", model=model,
        timeout_s=60, env={}, labels={}, max_cost_micro_usd=None, limits=None, egress_allow=None,
        idempotency_key=None, request_sha256=None, created_at=NOW, started_at=NOW, finished_at=NOW,
        exit_code=0, result=None, failure_reason=None, failure_detail=None, input_tokens=0,
        output_tokens=0, cache_read_tokens=0, cache_write_tokens=0, cost_micro_usd=0,
    )  # fmt: skip


def _usage(provider: str, priced_as: str, **tokens: int) -> MeteredEvent:
    data = {"provider": provider, "model": f"{priced_as}-20261001", "priced_as": priced_as}
    return MeteredEvent("usage", {**data, **tokens})


@pytest.mark.parametrize(
    ("micro_usd", "rounded"),
    [(Fraction(0), 0), (Fraction(1, 2), 1), (Fraction(49, 100), 0), (Fraction(5, 2), 3), (Fraction(7, 3), 2)],
)
def test_amounts_round_half_up_to_the_micro_dollar(micro_usd: Fraction, rounded: int) -> None:
    assert round_micro_usd(micro_usd) == rounded


def test_a_negative_amount_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        round_micro_usd(Fraction(-1, 3))


def test_token_prices_are_exact_decimals_not_binary_floats() -> None:
    # 0.1 USD per million tokens, three times: a float sum would be 0.30000000000000004.
    prices = PRICES.token_prices("openai", "gpt-6-luna")
    assert prices is not None
    assert prices.input == Fraction(1, 10)
    assert prices.micro_usd(TokenCounts(input_tokens=3)) == 0  # 0.3 micro-USD rounds down
    assert prices.micro_usd(TokenCounts(input_tokens=5)) == 1  # 0.5 rounds up
    assert prices.micro_usd(TokenCounts(input_tokens=3_000_000)) == 300_000


def test_each_token_kind_has_its_price() -> None:
    prices = TokenPrices(Fraction(2), Fraction(10), Fraction(1, 10), Fraction(5, 2))
    counts = TokenCounts(
        input_tokens=1000, output_tokens=100, cache_read_tokens=10_000, cache_write_tokens=400
    )
    assert prices.micro_usd(counts) == 2000 + 1000 + 1000 + 1000


def test_compute_is_priced_per_vcpu_hour_and_gb_hour_in_one_rounding() -> None:
    table = PriceTable("v", vcpu_hour_usd=Fraction(4, 100), gb_hour_usd=Fraction(4, 1000),
                       storage_gb_month_usd=Fraction(3, 10))  # fmt: skip
    assert table.compute_micro_usd(cpu_usec=3600 * 10**6, memory_byte_s=0) == 40_000
    assert table.compute_micro_usd(cpu_usec=0, memory_byte_s=GIB * 3600) == 4_000
    # 1 vCPU-second is 11.11 micro-USD, 1 GB-second 1.11: together 12.22, rounded once to 12.
    assert table.compute_micro_usd(cpu_usec=10**6, memory_byte_s=GIB) == 12
    assert table.compute_micro_usd(cpu_usec=10**6, memory_byte_s=0) == 11


def test_storage_is_priced_per_gb_month_of_thirty_days() -> None:
    month_s = 30 * 24 * 3600
    assert PRICES.storage_micro_usd(GIB * month_s) == 300_000
    assert PRICES.storage_micro_usd(GIB * 3600) == 417  # 0.30 / 720 = 416.67 micro-USD


def test_the_version_names_the_catalog_and_changes_with_any_price() -> None:
    catalog = default_catalog()
    assert PRICES.version.startswith(f"{catalog.version}+")
    assert len(PRICES.version) <= 40  # the ledger column's width
    assert build_price_table(catalog, LedgerSettings()).version == PRICES.version
    dearer = build_price_table(catalog, LedgerSettings(vcpu_hour_usd=Decimal("0.05")))
    assert dearer.version != PRICES.version


def test_settings_refuse_negative_and_absurd_prices() -> None:
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        LedgerSettings(gb_hour_usd=Decimal("-0.01"))
    with pytest.raises(ValueError, match="less than or equal to 1000"):
        LedgerSettings(storage_gb_month_usd=Decimal("1e9"))
    with pytest.raises(ValueError, match="finite"):
        LedgerSettings(vcpu_hour_usd=Decimal("NaN"))


def test_a_dispatch_gets_one_tokens_row_per_model_and_one_compute_row() -> None:
    events = [
        _usage("anthropic", "claude-sonnet-5-5", input_tokens=1000, output_tokens=100),
        _usage("anthropic", "claude-haiku-5-5", input_tokens=333, cache_read_tokens=7),
        _usage("anthropic", "claude-sonnet-5-5", input_tokens=1, output_tokens=2, cache_write_tokens=3),
        MeteredEvent("compute", {"cpu_usec": 2_000_000, "memory_byte_s": 5 * GIB}),
    ]
    rows = ledger_rows(_dispatch(), events, PRICES, NOW)
    assert [(row.kind, row.model) for row in rows] == [
        ("tokens", "claude-sonnet-5-5"), ("tokens", "claude-haiku-5-5"), ("compute", None),
    ]  # fmt: skip
    sonnet, haiku, compute = rows
    assert (sonnet.input_tokens, sonnet.output_tokens, sonnet.cache_write_tokens) == (1001, 102, 3)
    # Summed first, then priced and rounded once: 1001*2 + 102*10 + 3*2.5 = 3029.5 → 3030.
    assert sonnet.cost_micro_usd == 3030
    assert haiku.cost_micro_usd == round_micro_usd(Fraction(333, 10) + Fraction(7, 100))
    assert (compute.cpu_usec, compute.memory_byte_s, compute.cost_micro_usd) == (2_000_000, 5 * GIB, 28)
    assert {row.prices for row in rows} == {PRICES.version}
    assert {(row.agent, row.dispatch_id, row.tenant_id) for row in rows} == {
        ("claude", "01JDISPATCH0000000000000000", "01JTENANT00000000000000000")
    }


def test_a_dispatch_that_never_ran_still_gets_its_compute_row_at_zero() -> None:
    rows = ledger_rows(_dispatch(), [], PRICES, NOW)
    assert [(row.kind, row.cpu_usec, row.cost_micro_usd) for row in rows] == [("compute", 0, 0)]


def test_a_model_the_price_table_lost_is_charged_what_the_gateway_priced_it_at() -> None:
    data = {
        "provider": "anthropic",
        "priced_as": "claude-retired-1",
        "input_tokens": 10,
        "cost_usd": 0.000123,
    }
    event = MeteredEvent("usage", data)
    (tokens, _compute) = ledger_rows(_dispatch(), [event, event], PRICES, NOW)
    assert (tokens.model, tokens.input_tokens, tokens.cost_micro_usd) == ("claude-retired-1", 20, 246)


def test_malformed_quantities_in_events_count_as_nothing() -> None:
    events = [
        MeteredEvent("usage", {"provider": "anthropic", "priced_as": "claude-sonnet-5-5", "input_tokens": -5,
                               "output_tokens": "9", "cache_read_tokens": True, "cache_write_tokens": 1.5}),
        MeteredEvent("compute", {"cpu_usec": -1, "memory_byte_s": None}),
    ]  # fmt: skip
    tokens, compute = ledger_rows(_dispatch(), events, PRICES, NOW)
    assert (tokens.input_tokens, tokens.output_tokens, tokens.cache_read_tokens, tokens.cost_micro_usd) == (
        0, 0, 0, 0,
    )  # fmt: skip
    assert (compute.cpu_usec, compute.memory_byte_s) == (0, 0)


def test_storage_byte_seconds_count_later_items_from_their_creation() -> None:
    start, end = NOW, NOW + timedelta(hours=1)
    assert held_storage_byte_s(100, [], start, end) == 360_000
    later = [(1000, start + timedelta(minutes=30)), (7, end)]
    assert held_storage_byte_s(0, later, start, end) == 1000 * 1800
    assert (
        held_storage_byte_s(
            0, [(10**6, start + timedelta(microseconds=1_500_000))], start, start + timedelta(seconds=2)
        )
        == 500_000
    )


def test_memory_is_integrated_with_trapezoids_between_samples() -> None:
    integral = MemoryIntegral()
    integral.add(10.0, 0)
    integral.add(11.0, 1000)  # ramping up: 500 byte-seconds
    integral.add(13.0, 1000)  # flat: 2000
    integral.add(12.0, 5000)  # a clock step back adds nothing
    assert integral.byte_s == 2500
    assert integral.peak_bytes == 5000


def test_prices_are_read_from_the_environment_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTPOST_LEDGER__VCPU_HOUR_USD", "0.1")
    monkeypatch.setenv("OUTPOST_LEDGER__STORAGE_ACCRUAL_INTERVAL_S", "60")
    settings = Settings().ledger
    assert (settings.vcpu_hour_usd, settings.storage_accrual_interval_s) == (Decimal("0.1"), 60.0)
    assert build_price_table(default_catalog(), settings).vcpu_hour_usd == Fraction(1, 10)
