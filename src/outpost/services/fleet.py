"""The fleet's health report (`GET /health/fleet`, and the fleet's series in `/metrics`): its workers, each
agent's queue and last hour, and an overall status with the reasons for it.

Everything is read from the store, so every API server reports the same fleet, whichever workers are
its own. A report is computed in one read transaction and then served for `cache_s`, one computation at
a time: a burst of probes and scrapes costs one set of queries, and the figures stay consistent. Only
the caller that starts a computation waits for it; those that come meanwhile get the previous report. The
last hour's finished dispatches are kept between reports and topped up (see `fleet_recent`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime

from outpost.db.repositories import fleet as fleet_repo
from outpost.db.repositories import workers as worker_repo
from outpost.db.store import Store
from outpost.db.types import utc_now
from outpost.schemas.fleet import FleetHealth
from outpost.services.fleet_recent import RecentFinishes
from outpost.services.fleet_report import WINDOW, build_report
from outpost.services.fleet_settings import WORKER_STALE_S, FleetSettings


class FleetService:
    def __init__(
        self,
        store: Store,
        settings: FleetSettings,
        clock: Callable[[], datetime] = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
        stale_s: float = WORKER_STALE_S,
    ) -> None:
        """`stale_s`: the silence after which a worker is taken for lost (`WorkerSettings.stale_s`)."""
        self._store = store
        self._settings = settings
        self._stale_s = stale_s
        self._clock = clock
        self._monotonic = monotonic
        self._lock = asyncio.Lock()
        self._recent = RecentFinishes(WINDOW)
        self._cached: FleetHealth | None = None
        self._computed_at = 0.0

    async def report(self) -> FleetHealth:
        """The report, at most `cache_s` old (or while a newer one is being computed, the one before it).
        Raises StoreUnavailable when the database cannot be read."""
        cached = self._fresh()
        if cached is not None:
            return cached
        if self._lock.locked() and self._cached is not None:
            return self._cached  # being computed again: the last one meanwhile, rather than a wait
        async with self._lock:
            cached = self._fresh()  # computed by whoever held the lock meanwhile
            if cached is not None:
                return cached
            report = await self._compute()
            self._cached, self._computed_at = report, self._monotonic()
            return report

    def _fresh(self) -> FleetHealth | None:
        if self._cached is None or self._monotonic() - self._computed_at >= self._settings.cache_s:
            return None
        return self._cached

    async def _compute(self) -> FleetHealth:
        now = self._clock()
        async with self._store.read() as conn:
            workers = await worker_repo.list_workers(conn, seen_since=now - WINDOW)
            unfinished = await fleet_repo.unfinished_counts(conn)
            finished = await self._recent.refresh(conn, now)
        return build_report(now, workers, unfinished, finished, self._settings, self._stale_s)
