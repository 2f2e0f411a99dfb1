"""The price table: what tokens, compute and storage cost, with a version string, and exact arithmetic.

Money is an integer number of micro-USD (millionths of a dollar). Every amount is computed exactly (as a
fraction) from integer quantities and decimal prices, then rounded ONCE, half up, to the micro-dollar:
one ledger row is one rounding. Sums of rows are sums of integers and never drift.

Units: token prices are USD per million tokens (the model catalog's); compute is priced per vCPU-hour
(CPU time in microseconds, as the cgroup counts it) and per GB-hour of memory (byte-seconds); storage per
GB-month of bytes held (byte-seconds). A GB is 2^30 bytes, an hour 3,600 s, a month 30 days.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction

from outpost.agents.catalog import Catalog
from outpost.ledger.settings import LedgerSettings

MICRO = 1_000_000
GIB = 2**30
HOUR_S = 3600
MONTH_S = 30 * 24 * HOUR_S
USEC_PER_S = 1_000_000


def round_micro_usd(micro_usd: Fraction) -> int:
    """The nearest whole micro-dollar, halves rounded up. Raises ValueError for a negative amount (no
    quantity or price is negative)."""
    if micro_usd < 0:
        raise ValueError(f"a cost cannot be negative: {micro_usd}")
    return (2 * micro_usd.numerator + micro_usd.denominator) // (2 * micro_usd.denominator)


def exact(price: float | Decimal | str) -> Fraction:
    """A decimal price as an exact fraction: a float is read as the decimal it prints as (0.1 → 1/10),
    not as its binary approximation."""
    return Fraction(str(price)) if isinstance(price, float) else Fraction(price)


@dataclass(frozen=True, slots=True)
class TokenCounts:
    """Metered tokens of one kind of each; `input_tokens` excludes cached input (counted apart)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    def plus(self, other: TokenCounts) -> TokenCounts:
        return TokenCounts(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_tokens + other.cache_read_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
        )


@dataclass(frozen=True, slots=True)
class TokenPrices:
    """USD per million tokens of each kind."""

    input: Fraction
    output: Fraction
    cache_read: Fraction
    cache_write: Fraction

    def micro_usd(self, counts: TokenCounts) -> int:
        """What `counts` cost, rounded once (a price per million tokens times a count is micro-USD)."""
        return round_micro_usd(
            counts.input_tokens * self.input
            + counts.output_tokens * self.output
            + counts.cache_read_tokens * self.cache_read
            + counts.cache_write_tokens * self.cache_write
        )


@dataclass(frozen=True, slots=True)
class PriceTable:
    """Every price the ledger applies, under one version string (stored with each ledger row)."""

    version: str
    vcpu_hour_usd: Fraction
    gb_hour_usd: Fraction
    storage_gb_month_usd: Fraction
    tokens: Mapping[tuple[str, str], TokenPrices] = field(default_factory=dict)
    """By (provider, model id)."""

    def token_prices(self, provider: str, model: str) -> TokenPrices | None:
        return self.tokens.get((provider, model))

    def compute_micro_usd(self, cpu_usec: int, memory_byte_s: int) -> int:
        """CPU time and memory-time together, rounded once."""
        cpu = Fraction(cpu_usec, USEC_PER_S * HOUR_S) * self.vcpu_hour_usd
        memory = Fraction(memory_byte_s, GIB * HOUR_S) * self.gb_hour_usd
        return round_micro_usd((cpu + memory) * MICRO)

    def storage_micro_usd(self, storage_byte_s: int) -> int:
        return round_micro_usd(Fraction(storage_byte_s, GIB * MONTH_S) * self.storage_gb_month_usd * MICRO)


def build_price_table(catalog: Catalog, settings: LedgerSettings) -> PriceTable:
    """The table in force: the catalog's token prices and the settings' compute and storage prices. Its
    version is the catalog's, plus a digest of every price (a changed setting changes the version)."""
    tokens = {
        (vendor.provider, model.id): TokenPrices(
            exact(model.input), exact(model.output), exact(model.cache_read), exact(model.cache_write)
        )
        for vendor in catalog.vendors.values()
        for model in vendor.models
    }
    unit_prices = {
        "vcpu_hour_usd": settings.vcpu_hour_usd, "gb_hour_usd": settings.gb_hour_usd,
        "storage_gb_month_usd": settings.storage_gb_month_usd,
    }  # fmt: skip
    return PriceTable(
        version=f"{catalog.version}+{_digest(tokens, unit_prices)}",
        vcpu_hour_usd=exact(settings.vcpu_hour_usd),
        gb_hour_usd=exact(settings.gb_hour_usd),
        storage_gb_month_usd=exact(settings.storage_gb_month_usd),
        tokens=tokens,
    )


def _digest(tokens: Mapping[tuple[str, str], TokenPrices], unit_prices: Mapping[str, Decimal]) -> str:
    """Eight hex digits naming these exact prices."""
    canonical = {
        "tokens": sorted(
            [provider, model, *(str(getattr(prices, kind)) for kind in TokenPrices.__slots__)]
            for (provider, model), prices in tokens.items()
        ),
        "units": {name: str(exact(value)) for name, value in sorted(unit_prices.items())},
    }
    return hashlib.sha256(json.dumps(canonical, separators=(",", ":")).encode()).hexdigest()[:8]
