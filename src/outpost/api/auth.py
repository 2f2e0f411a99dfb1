"""Authentication and per-key rate limiting, as FastAPI dependencies."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request

from outpost.app import Container
from outpost.errors import PermissionDenied, RateLimited
from outpost.services.keys import Principal


async def get_container(request: Request) -> Container:
    # async on purpose: FastAPI runs plain `def` dependencies in a thread pool, a hop on every request.
    container: Container = request.app.state.container
    return container


_SWEEP_FLOOR = 1024


class TokenBuckets:
    """One token bucket per key: `rate` requests per second, up to `burst` at once after a pause
    (default: twice the rate). A rate of 0 disables the limit.

    Memory stays bounded by the keys active lately: a bucket that has refilled is the same as none, and
    such buckets are dropped whenever the table has doubled since the last sweep."""

    def __init__(
        self, rate_per_s: float, burst: int | None = None, clock: Callable[[], float] = time.monotonic
    ):
        self._rate = rate_per_s
        self._capacity = float(burst) if burst is not None else max(1.0, 2 * rate_per_s)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._sweep_at = _SWEEP_FLOOR

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key_id: str) -> None:
        """Raises RateLimited, saying when a token will be there, when the key has none left."""
        if self._rate <= 0:
            return
        now = self._clock()
        tokens = self._tokens(key_id, now)
        if tokens < 1:
            self._buckets[key_id] = (tokens, now)
            raise RateLimited("too many requests for this API key; slow down", (1 - tokens) / self._rate)
        self._buckets[key_id] = (tokens - 1, now)
        if len(self._buckets) >= self._sweep_at:
            self._sweep(now)

    def _tokens(self, key_id: str, now: float) -> float:
        tokens, last = self._buckets.get(key_id, (self._capacity, now))
        return min(self._capacity, tokens + (now - last) * self._rate)

    def _sweep(self, now: float) -> None:
        self._buckets = {
            key_id: (tokens, last)
            for key_id, (tokens, last) in self._buckets.items()
            if tokens + (now - last) * self._rate < self._capacity
        }
        self._sweep_at = max(_SWEEP_FLOOR, 2 * len(self._buckets))


def _bearer_token(request: Request) -> str:
    """The request's bearer token; empty when it sent none."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


async def _key_principal(request: Request) -> Principal:
    """Raises AuthenticationFailed (the key service audits each failure, with the client's address)."""
    container: Container = request.app.state.container
    source_ip = request.client.host if request.client else None
    return await container.keys.authenticate(_bearer_token(request), source_ip)


async def authenticate(request: Request) -> Principal:
    """The caller's principal; the request counts against its key's rate limit. Raises
    AuthenticationFailed, RateLimited."""
    principal = await _key_principal(request)
    buckets: TokenBuckets = request.app.state.rate_limits
    buckets.take(principal.key_id)
    return principal


async def authenticate_stream(request: Request) -> Principal:
    """The caller's principal, for event streams: not counted against the rate limit (one request holds
    a stream open for hours, and a client reconnecting after a dropped connection must not be refused).
    Raises AuthenticationFailed."""
    return await _key_principal(request)


CallerDep = Annotated[Principal, Depends(authenticate)]
StreamCallerDep = Annotated[Principal, Depends(authenticate_stream)]


async def authenticate_admin(caller: CallerDep) -> Principal:
    """An admin key's principal. A dependency, so a tenant key gets 403 before its body is validated."""
    if not caller.is_admin:
        raise PermissionDenied("only an admin key can read or change tenants")
    return caller


AdminDep = Annotated[Principal, Depends(authenticate_admin)]
ContainerDep = Annotated[Container, Depends(get_container)]
