"""Provider accounts out of quota, as runs meet them.

When a provider answers a run's call with "quota or rate limit exhausted, retry at T", the account whose
key was in force is recorded as exhausted until T: at once in this process, and in the store (written in
the background: the gateway's callbacks must not block) for other workers and for the claim, which keeps
new dispatches needing that account queued. Until T, the gateway answers the calls of every run on that
account itself, with 429 and `Retry-After`, instead of letting them hammer the provider. A record expires
by itself at T; a later successful call on the account removes it at once.

Known limit: a call already under way when the record is made, and that then succeeds, removes it too;
at worst one more call then reaches the provider and records it again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from outpost.db.repositories import claims as claim_repo
from outpost.db.repositories import quotas as repo
from outpost.db.repositories.quotas import QuotaRow
from outpost.db.store import Store
from outpost.db.types import utc_now
from outpost.domain.quotas import iso_utc, seconds_until
from outpost.errors import StoreUnavailable
from outpost.gateway.metering import MeteredCall
from outpost.gateway.tokens import CallGate, CallRefusal
from outpost.gateway.upstream_errors import ProviderFailure

log = logging.getLogger(__name__)
REFRESH_S = 1.0
"""How long what is known of an account is trusted before the store is read again (another worker may
have recorded or cleared a quota meanwhile)."""

Key = tuple[str, str]  # (account, provider)


@dataclass(frozen=True, slots=True)
class _Known:
    until: datetime | None
    at: float
    """`time.monotonic()` when this was learnt."""


@dataclass(frozen=True, slots=True)
class RunHooks:
    """A run's gateway callbacks, wrapped to report to the book, and its gate."""

    on_usage: Callable[[str, MeteredCall], None]
    on_failure: Callable[[str, ProviderFailure], None]
    gate: CallGate


class QuotaBook:
    def __init__(self, store: Store, refresh_s: float = REFRESH_S) -> None:
        self._store = store
        self._refresh_s = refresh_s
        self._known: dict[Key, _Known] = {}
        self._unwritten: Counter[Key] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()
        self._writes = asyncio.Lock()

    def hooks(
        self,
        account: str,
        on_usage: Callable[[str, MeteredCall], None],
        on_failure: Callable[[str, ProviderFailure], None],
    ) -> RunHooks:
        """The callbacks and gate for a run whose calls go out with `account`'s keys."""

        def usage(provider: str, call: MeteredCall) -> None:
            on_usage(provider, call)
            self.succeeded(account, provider)

        def failure(provider: str, failed: ProviderFailure) -> None:
            on_failure(provider, failed)
            self.failed(account, provider, failed)

        async def gate(provider: str) -> CallRefusal | None:
            return await self.refusal(account, provider)

        return RunHooks(usage, failure, gate)

    def failed(self, account: str, provider: str, failure: ProviderFailure) -> None:
        """A provider refused a call. A quota failure that says when to retry is recorded. Never blocks."""
        if failure.kind != "quota" or failure.retry_at is None:
            return
        key = (account, provider)
        known = self._known.get(key)
        if known is not None and known.until is not None and known.until >= failure.retry_at:
            return  # already held at least that long (a per-minute limit does not shorten a daily one)
        self._known[key] = _Known(failure.retry_at, time.monotonic())
        row = QuotaRow(account, provider, failure.retry_at, failure.message, utc_now())
        self._in_background(key, self._record(row))

    def succeeded(self, account: str, provider: str) -> None:
        """A call on the account succeeded: a quota known for it is over. Never blocks."""
        key = (account, provider)
        known = self._known.get(key)
        if known is None or known.until is None:
            return
        self._known[key] = _Known(None, time.monotonic())
        self._in_background(key, self._clear(account, provider))

    async def exhausted_until(self, account: str, provider: str) -> datetime | None:
        """When the account's quota at the provider ends; None when it is not out of quota. Reads the
        store at most once per `refresh_s` per account; when the store cannot be read, what is known."""
        key = (account, provider)
        known = self._known.get(key)
        if (known is None or time.monotonic() - known.at >= self._refresh_s) and not self._unwritten[key]:
            known = await self._read(key) or known
        if known is None or known.until is None:
            return None
        return known.until if known.until > utc_now() else None

    async def refusal(self, account: str, provider: str) -> CallRefusal | None:
        """The gateway's answer to a call on an account out of quota; None: forward the call."""
        until = await self.exhausted_until(account, provider)
        if until is None:
            return None
        message = (
            f"{provider} quota exhausted until {iso_utc(until)}; Outpost answers for the provider until then"
        )
        return CallRefusal(429, message, retry_after_s=seconds_until(until, utc_now()))

    async def flush(self) -> None:
        """Wait until what was recorded or cleared so far is in the store (before it is closed)."""
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _read(self, key: Key) -> _Known | None:
        try:
            async with self._store.read() as conn:
                row = await repo.get(conn, *key)
        except StoreUnavailable:
            log.warning("cannot read the quota of %s at %s; going by what this process knows", *key)
            return None
        known = _Known(row.exhausted_until if row is not None else None, time.monotonic())
        if not self._unwritten[key]:  # a record of this process not yet written is newer than the store
            self._known[key] = known
        return known

    async def _record(self, row: QuotaRow) -> None:
        async with self._store.write() as conn:
            await repo.record_exhausted(conn, self._store.dialect, row)

    async def _clear(self, account: str, provider: str) -> None:
        async with self._store.write() as conn:
            if await repo.clear(conn, account, provider):
                # Dispatches queued for this quota are due again; the next claim looks at each afresh.
                await claim_repo.release_waits(conn, utc_now())

    def _in_background(self, key: Key, write: Coroutine[Any, Any, None]) -> None:
        self._unwritten[key] += 1
        task = asyncio.create_task(self._serialized(key, write), name=f"quota-{key[0]}-{key[1]}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serialized(self, key: Key, write: Coroutine[Any, Any, None]) -> None:
        """Writes in the order they were made (a clear must not overtake the record it clears)."""
        try:
            async with self._writes:
                await write
        except Exception:
            log.exception("could not store the quota of %s at %s", *key)
        finally:
            self._unwritten[key] -= 1
            if not self._unwritten[key]:
                del self._unwritten[key]
