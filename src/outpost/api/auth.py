"""Authentication and per-key rate limiting, as FastAPI dependencies."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import Depends, Request

from outpost.app import Container
from outpost.errors import AuthenticationFailed, PermissionDenied, RateLimited
from outpost.services.keys import INVALID_KEY, Principal


async def get_container(request: Request) -> Container:
    # async on purpose: FastAPI runs plain `def` dependencies in a thread pool, a hop on every request.
    container: Container = request.app.state.container
    return container


class TokenBuckets:
    """One token bucket per key: `rate` requests per second, bursts up to twice that."""

    def __init__(self, rate_per_s: float) -> None:
        self._rate = rate_per_s
        self._capacity = max(1.0, 2 * rate_per_s)
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key_id: str) -> None:
        """Raises RateLimited when the key has no token left."""
        if self._rate <= 0:
            return
        now = time.monotonic()
        tokens, last = self._buckets.get(key_id, (self._capacity, now))
        tokens = min(self._capacity, tokens + (now - last) * self._rate)
        if tokens < 1:
            self._buckets[key_id] = (tokens, now)
            raise RateLimited("too many requests for this API key; slow down", (1 - tokens) / self._rate)
        self._buckets[key_id] = (tokens - 1, now)


async def authenticate(request: Request) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationFailed(INVALID_KEY)
    container: Container = request.app.state.container
    principal = await container.keys.authenticate(token.strip())
    buckets: TokenBuckets = request.app.state.rate_limits
    buckets.take(principal.key_id)
    return principal


CallerDep = Annotated[Principal, Depends(authenticate)]


async def authenticate_admin(caller: CallerDep) -> Principal:
    """An admin key's principal. A dependency, so a tenant key gets 403 before its body is validated."""
    if not caller.is_admin:
        raise PermissionDenied("only an admin key can read or change tenants")
    return caller


AdminDep = Annotated[Principal, Depends(authenticate_admin)]
ContainerDep = Annotated[Container, Depends(get_container)]
