"""The per-key token buckets: the rate, the burst, Retry-After, and memory that stays bounded."""

from __future__ import annotations

import math

import pytest

from outpost.api.auth import TokenBuckets
from outpost.errors import RateLimited
from outpost.settings import LimitSettings


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def taken(buckets: TokenBuckets, key: str, count: int) -> int:
    """How many of `count` requests right now get through."""
    passed = 0
    for _ in range(count):
        try:
            buckets.take(key)
        except RateLimited:
            continue
        passed += 1
    return passed


def test_the_defaults_are_fifty_a_second_with_a_burst_of_a_hundred() -> None:
    limits = LimitSettings()
    buckets = TokenBuckets(limits.requests_per_s, limits.requests_burst, clock=Clock())
    assert limits.requests_per_s == 50
    assert taken(buckets, "k", 150) == 100


def test_a_key_gets_its_burst_then_the_rate_and_other_keys_are_not_affected() -> None:
    clock = Clock()
    buckets = TokenBuckets(10, 20, clock=clock)
    assert taken(buckets, "a", 25) == 20
    assert taken(buckets, "b", 5) == 5
    clock.now += 0.5
    assert taken(buckets, "a", 10) == 5


def test_retry_after_is_when_the_next_token_comes_and_waiting_that_long_is_enough() -> None:
    clock = Clock()
    buckets = TokenBuckets(0.4, 1, clock=clock)
    buckets.take("k")
    with pytest.raises(RateLimited) as refused:
        buckets.take("k")
    assert refused.value.retry_after_s == pytest.approx(2.5)
    clock.now += math.ceil(refused.value.retry_after_s)  # what the Retry-After header says
    buckets.take("k")


def test_a_rate_of_zero_lets_everything_through() -> None:
    buckets = TokenBuckets(0, clock=Clock())
    assert taken(buckets, "k", 10_000) == 10_000
    assert len(buckets) == 0


def test_buckets_that_refilled_are_dropped_so_memory_follows_the_keys_active_lately() -> None:
    clock = Clock()
    buckets = TokenBuckets(100, 200, clock=clock)
    for i in range(100_000):
        buckets.take(f"key{i}")
        clock.now += 0.001  # each key's bucket is full again two seconds after its request
    assert len(buckets) <= 2 * 2_000 + 2
    # A key still short of tokens keeps its bucket through a sweep: it cannot start over with a burst.
    assert taken(buckets, "busy", 300) == 200
    for i in range(5_000):
        buckets.take(f"other{i}")
    assert taken(buckets, "busy", 1) == 0
